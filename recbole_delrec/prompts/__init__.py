"""Prompt templates (``templates/*.txt``, ``domains.yaml``) and the token-level builder."""

from recbole_delrec.prompts.builder import (
    CANDIDATES_SLOT,
    TASK_SLOTS,
    HistoryCuts,
    PromptBuilder,
    PromptIds,
    check_template,
    domain_words,
    load_template,
    template_path,
)

__all__ = [
    "CANDIDATES_SLOT", "TASK_SLOTS", "HistoryCuts", "PromptBuilder", "PromptIds", "check_template",
    "domain_words", "load_template", "template_path",
]
