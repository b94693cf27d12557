"""Which seeds a run asks for (``seeds: N`` or a list), read from its configuration.

``run_delrec`` then runs the whole pipeline once per seed
(:func:`~recbole_delrec.delrec.quick_start.run_seeds`) and summarises the seeds' run folders
(:func:`~recbole_delrec.evaluation.summary.summarise`).
"""

from __future__ import annotations

from typing import Any

import yaml
from recbole.config import Config


def resolve_seeds(value: Any, base_seed: int) -> list[int]:
    """``seeds: N`` -> ``base_seed .. base_seed + N - 1``; ``seeds: [a, b]`` -> those seeds.

    Anything else (0, a negative count, an empty list, repeats, text) is refused with the fix.
    """
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"--seeds={value}: the number of seeds must be at least 1 (e.g. --seeds=3).")
        return [base_seed + i for i in range(value)]
    if (isinstance(value, list) and value and len(set(value)) == len(value)
            and all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        return list(value)
    raise ValueError(f"seeds: found {value!r}; give a count >= 1 (--seeds=3) or a list of distinct integer "
                     f"seeds (seeds: [2020, 2021, 2022]).")


def seeds_of(config: Config) -> list[int] | None:
    """The seeds a run's configuration asks for (``seeds:`` in a file, ``config_dict`` or
    ``--seeds``), counted from its ``seed``; None for one plain run."""
    return None if config["seeds"] is None else resolve_seeds(config["seeds"], config["seed"])
