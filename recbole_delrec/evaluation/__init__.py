"""Evidence about a finished run: per-user records, statistics, breakdowns, order sensitivity."""
