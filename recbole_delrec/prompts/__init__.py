"""Prompt templates (``templates/*.txt``, ``domains.yaml``) and the token-level builder."""

from recbole_delrec.prompts.builder import (
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
    "TASK_SLOTS", "HistoryCuts", "PromptBuilder", "PromptIds", "check_template", "domain_words",
    "load_template", "template_path",
]
