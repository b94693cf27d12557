"""Building RecBole ``Config`` objects inside the plugin, away from the command line.

RecBole's ``Config`` always parses ``sys.argv``.  A config that the plugin builds for
another purpose (the teacher's, a Ray trial's) must not inherit DELRec's command-line
overrides or a Ray worker's flags, so it is built with the command line hidden and every
value passed explicitly.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from recbole.config import Config


@contextmanager
def hidden_command_line() -> Iterator[None]:
    """Let RecBole's ``Config`` see no command-line arguments for the duration."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def isolated_config(
    model: str, dataset: str, config_dict: Mapping[str, Any], config_files: list[str] | None = None
) -> Config:
    """A RecBole ``Config`` from explicit values only (no command-line arguments)."""
    with hidden_command_line():
        return Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(config_dict))
