"""Evaluation and evidence: every model on the same candidates (:mod:`.scoring`), baselines
(:mod:`.baselines`), per-user records (:mod:`.records`), cost (:mod:`.cost`), and what the records
say across seeds (:mod:`.stats`, :mod:`.buckets`, :mod:`.summary`, :mod:`.seeds`) and under other
candidate orders (:mod:`.order`)."""
