"""Stage 1 of DELRec: TA and RPS examples, task weighting, and the soft-prompt distiller."""

from recbole_delrec.delrec.distill.stage1 import SoftPromptDistiller

__all__ = ["SoftPromptDistiller"]
