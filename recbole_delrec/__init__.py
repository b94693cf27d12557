"""recbole-delrec: LLM-based sequential recommendation (DELRec, TSLRec) as a RecBole plugin.

Importing the package, or any module of it, changes nothing in RecBole.  :func:`register`
does, once and explicitly: it applies the RecBole mends of :mod:`recbole_delrec.compat` and
makes RecBole's own lookups (``run_recbole``, ``Config``, ``get_model``, ``get_trainer``)
know ``DELRec`` and ``TSLRec``.  Every entry point of the plugin (``run_delrec``,
``run_tslrec``, sweeps, ``run_delrec.py``) calls it itself::

    import recbole_delrec
    recbole_delrec.register()
    from recbole.quick_start import run_recbole
    run_recbole(model="DELRec", dataset="ml-100k")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public names, imported on first use so that ``import recbole_delrec`` stays free of effects.
_EXPORTS = {
    "DELRec": "recbole_delrec.delrec.model",
    "DELRecTrainer": "recbole_delrec.delrec.trainer",
    "run_delrec": "recbole_delrec.delrec.quick_start",
    "TSLRec": "recbole_delrec.tslrec.model",
    "TSLRecTrainer": "recbole_delrec.tslrec.trainer",
    "run_tslrec": "recbole_delrec.tslrec.quick_start",
}
__all__ = ["register", "__version__", *_EXPORTS]


def register() -> None:
    """Mend RecBole where it is broken for us and register the plugin's models (idempotent)."""
    from recbole_delrec.registry import register as _register

    _register()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recbole_delrec' has no attribute '{name}'")
