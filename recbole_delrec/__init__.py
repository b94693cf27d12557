"""recbole-delrec: LLM-based sequential recommendation (DELRec, TSLRec) as a RecBole plugin.

Importing the package makes ``DELRec`` and ``TSLRec`` known to RecBole's ``get_model``, and
so to its ``Config`` and ``run_recbole``, and changes nothing else in RecBole::

    import recbole_delrec
    from recbole.quick_start import run_recbole
    run_recbole(model="DELRec", dataset="ml-100k")

When RecBole first resolves one of them, :func:`register` runs: it applies the RecBole
mends of :mod:`recbole_delrec.compat` and makes RecBole's other lookups (``get_trainer``, the
data set class, the default YAML) answer for the plugin.  Every entry point of the plugin
(``run_delrec``, ``run_tslrec``, sweeps, ``run_delrec.py``) calls it itself
(:mod:`recbole_delrec.registry`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from recbole_delrec.registry import install, register

__version__ = "0.1.0"

#: Public names, imported on first use so that ``import recbole_delrec`` stays light (no RecBole, no LLM).
_EXPORTS = {
    "DELRec": "recbole_delrec.delrec.model",
    "DELRecTrainer": "recbole_delrec.delrec.trainer",
    "run_delrec": "recbole_delrec.delrec.quick_start",
    "TSLRec": "recbole_delrec.tslrec.model",
    "TSLRecTrainer": "recbole_delrec.tslrec.trainer",
    "run_tslrec": "recbole_delrec.tslrec.quick_start",
}
__all__ = ["register", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recbole_delrec' has no attribute '{name}'")


install()
