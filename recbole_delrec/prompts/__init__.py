"""Prompt templates (``templates/*.txt``, ``domains.yaml``) and the token-level builder."""

from recbole_delrec.prompts.builder import (
    PromptBuilder,
    PromptIds,
    domain_words,
    load_template,
)

__all__ = ["PromptBuilder", "PromptIds", "domain_words", "load_template"]
