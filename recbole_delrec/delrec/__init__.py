"""DELRec: the model, its trainer, stage-1 distillation and the run entry point."""
