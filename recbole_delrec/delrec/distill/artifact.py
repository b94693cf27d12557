"""The stage-1 soft prompt as a cached artefact: distilled once, reused by every later run
with the same inputs (:mod:`recbole_delrec.runs.cache`).

Its key holds the settings below, the teacher it imitates (:func:`teacher_identity`), the
prompt template texts, the LLM's identity and dtype and the training split.  ``SHAPING``
and ``NOT_SHAPING`` together name every setting that stage 1 reads (the stage itself and
the parts of ``DELRec.__init__`` that make its titles, prompts, LLM and soft prompt); a
test records the reads of a real stage 1 and fails on any key missing from both.
"""

from __future__ import annotations

from logging import getLogger
from pathlib import Path

from recbole.utils import set_color

from recbole_delrec.delrec.distill.stage1 import SoftPromptDistiller
from recbole_delrec.prompts import load_template
from recbole_delrec.runs.cache import artifact_key, artifact_path, llm_identity, load_or_make, split_fingerprint
from recbole_delrec.teacher import teacher_identity

#: Settings stage 1 reads that shape the soft prompt.
SHAPING = (
    # the distillation
    "seed", "reproducibility", "delrec_tasks", "stage1_epochs", "stage1_batch_size", "stage1_bucket_window",
    "stage1_learning_rate", "stage1_prefixes_per_user", "stage1_max_examples", "stage1_holdout_users",
    "teacher_topk", "ta_demo_length", "ta_query_length", "rps_loss", "rps_temperature", "stage1_weighting",
    "enable_amp", "enable_scaler", "n_candidates",
    # prompts, titles and the LLM they go through
    "teacher_model", "history_length", "MAX_ITEM_LIST_LENGTH", "max_title_tokens", "max_prompt_title_tokens", "max_prompt_tokens", "domain",
    "title_field", "title_year_field", "llm_path", "llm_gguf_file", "scratch_llm",
    "n_soft_tokens",
)
#: Settings stage 1 reads that do not change the soft prompt, and why.
NOT_SHAPING = {
    "stage": "which stages run, not what stage 1 makes",
    "soft_prompt_path": "a file to load instead: it is the artefact, not an input of it",
    "checkpoint_dir": "where artefacts are kept",
    "prompt_template_dir": "where the templates are read: their texts are in the key",
    "show_progress": "progress bars",
    "device": "where it runs; the same computation",
    "local_rank": "which process writes; every rank distils the same prompt",
    "llm_dtype": "in the key as the LLM's identity, resolved on this device (auto: bf16 or fp32); the scratch T5 ignores it",
    "llm_attention": "another kernel for the same attention function",
    "fused_gelu": "one kernel for the same GELU function",
    "llm_compile": "compiled kernels of the same model",
    "gradient_checkpointing": "recomputes the same activations (a test compares the gradients)",
    "adalora": "stage 1 runs the LLM with its adapters switched off",
    "scratch_adalora": "stage 1 runs the LLM with its adapters switched off",
    "epochs": "stage 2's length (AdaLoRA's schedule)",
    "train_batch_size": "stage 2's batches (AdaLoRA's schedule)",
    "train_prefixes_per_user": "stage 2's training rows (AdaLoRA's schedule)",
    "train_max_prefixes": "stage 2's training rows (AdaLoRA's schedule)",
    "candidates_path": "the evaluation's saved candidate sets; stage 1 draws its own examples",
    "prompts_per_forward": "how many prompts one LLM forward runs: the same scores, in other batch shapes",
    "candidate_orders": "an evaluation option (predict's mean over orders); stage 1 never calls predict",
    "rerank_k": "full-ranking evaluation; as a candidate count it is in the key as n_candidates",
    "eval_args": "its candidate count is in the key as n_candidates, its split in the split's fingerprint",
    "USER_ID_FIELD": "field names: the training split's fingerprint holds the data",
    "ITEM_ID_FIELD": "field names: the training split's fingerprint holds the data",
    "LIST_SUFFIX": "field names: the training split's fingerprint holds the data",
    "ITEM_LIST_LENGTH_FIELD": "field names: the training split's fingerprint holds the data",
    "NEG_PREFIX": "field names: the training split's fingerprint holds the data",
}
TEMPLATES = ("lsr", "rps", "ta")  # the scratch tokenizer learns all three; stage 1 prompts with two
#: Raised whenever stage 1 makes another soft prompt from the same inputs, so no older file is
#: reused for it (2: the best *trained* epoch is kept, never the random start; 3: no negative's
#: title reads as its target's, :class:`CandidateSampler`).
STAGE1_VERSION = 3


def soft_prompt_meta(config, dataset, llm_source: str) -> dict:
    """What a soft prompt belongs to: its file's label and key, checked again whenever it is loaded."""
    templates = {task: load_template(task, config["domain"], config["prompt_template_dir"]) for task in TEMPLATES}
    values = {**{k: config[k] for k in SHAPING}, "teacher": teacher_identity(config), "stage1": STAGE1_VERSION}
    key = artifact_key("soft-prompt", values, split_fingerprint(dataset), templates,
                       llm_identity(config))
    return {"dataset": config["dataset"], "teacher": config["teacher_model"], "llm": llm_source,
            "n_items": dataset.item_num, "key": key}


def soft_prompt_path(config, meta: dict) -> Path:
    """``soft_prompt_path``, or the cache file named for data set, teacher, LLM and key."""
    if config["soft_prompt_path"]:
        return Path(config["soft_prompt_path"])
    return artifact_path(config["checkpoint_dir"], "soft-prompt", (meta["dataset"], meta["teacher"], meta["llm"]),
                         meta["key"])


def prepare_soft_prompt(model, config, dataset, stage: str, writes: bool) -> dict:
    """Stage 1, or the soft prompt a previous run distilled from the same inputs.

    Returns stage 1's result (fidelity before and after), the saved one when reused.  In a
    distributed run every rank distils (they share the work) and ``writes`` says whether
    this process writes the file.
    """
    if model.soft_prompt.n_tokens == 0:
        return {}
    meta = soft_prompt_meta(config, dataset, model.llm_source)
    logger = getLogger()

    def load(path: Path) -> dict:
        stored = model.soft_prompt.load(path, meta)
        logger.info(set_color("Stage 1", "green") + f": reusing soft prompt {path}")
        return stored.get("result", {})

    def distil(path: Path) -> dict:
        if config["soft_prompt_path"]:
            raise FileNotFoundError(f"soft_prompt_path '{path}' does not exist.")
        if not config["delrec_tasks"]:
            logger.info(set_color("Stage 1", "green") + ": delrec_tasks is empty, the soft prompt stays random")
            return {}
        if stage == "2":
            raise ValueError(
                f"stage: 2 needs a distilled soft prompt, and none is saved at {path}: run stage 1 "
                f"first (stage: 1 or all) or set soft_prompt_path."
            )
        result = SoftPromptDistiller(model, config).fit(dataset)
        if writes:
            model.soft_prompt.save(path, {**meta, "result": result})
        logger.info(set_color("Stage 1", "green") + f": saved soft prompt {path} ({result})")
        return result

    return load_or_make(soft_prompt_path(config, meta), load, distil, collective=True)
