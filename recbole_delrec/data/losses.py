"""What RecBole's loading dropped, said in the log: one line per loss and how to keep it."""

from __future__ import annotations

from logging import getLogger

from recbole.config import Config


def log_losses(config: Config, dataset) -> None:
    """One log line per loss recorded on ``dataset`` (``dataset.losses``, if it keeps any)."""
    logger = getLogger()
    for line in getattr(dataset, "losses", []):
        logger.warning(line)
