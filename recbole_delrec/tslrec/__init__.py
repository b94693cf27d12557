"""TSLRec (Liu et al., "A Practice-Friendly Two-Stage LLM-Enhanced Paradigm in Sequential
Recommendation"): pre-grouping, LLM information reconstruction and augmentation, and the
gated item embedding that carries the LLM's knowledge into any RecBole backbone.

* :mod:`~recbole_delrec.tslrec.grouping`: k-means over a teacher's item embeddings, users'
  preference distributions;
* :mod:`~recbole_delrec.tslrec.sft`: the LLM (T5 encoder + LoRA) trained to reconstruct those
  distributions, then run once per item to produce knowledge-enhanced embeddings;
* :mod:`~recbole_delrec.tslrec.gated`: the item modules swapped into a RecBole backbone;
* :mod:`~recbole_delrec.tslrec.trainer`: ``TSLRecTrainer``, which runs it all.
"""
