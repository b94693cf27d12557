"""recbole-delrec: LLM-based sequential recommendation (DELRec) as a RecBole plugin.

Importing the package registers its models with RecBole, so RecBole's own entry points
(``run_recbole``, ``Config``, ``get_model``, ``get_trainer``) know ``DELRec``.
"""

from recbole_delrec import compat

compat.apply()

from recbole_delrec import registry  # noqa: E402  (after the RecBole fixes)

registry.register()

from recbole_delrec.model.delrec import DELRec  # noqa: E402
from recbole_delrec.quick_start import run_delrec  # noqa: E402
from recbole_delrec.trainer import DELRecTrainer  # noqa: E402

__version__ = "0.1.0"
__all__ = ["DELRec", "DELRecTrainer", "run_delrec", "__version__"]
