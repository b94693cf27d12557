"""Evaluation beyond one model's metric dict: every model on the same candidates
(:mod:`.scoring`), baselines (:mod:`.baselines`), per-user records (:mod:`.records`) and what
each model cost (:mod:`.cost`)."""
