"""Converters from the public raw Amazon 2014 and Steam files to RecBole atomic files.

``python -m recbole_delrec.convert --help`` runs them from the command line.
"""

from __future__ import annotations

from typing import Any

from .amazon2014 import convert_amazon2014
from .steam import convert_steam

__all__ = ["convert_amazon2014", "convert_steam", "main"]


def __getattr__(name: str) -> Any:
    """Import ``main`` lazily: importing ``__main__`` here would make ``python -m`` warn
    that the module was already imported before it ran."""
    if name == "main":
        from .__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
