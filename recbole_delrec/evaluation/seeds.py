"""The whole pipeline once per seed, then the summary over the seeds' run folders.

Each seed is a complete ``run_delrec`` (teacher, baselines, stage 1, stage 2, test) with
``seed`` set, so each writes its own complete run folder, and the teacher and stage-1 caches,
keyed by the seed among their settings, are reused by a second invocation.  The command line's
other ``--key=value`` apply to every seed; ``--seed`` itself is replaced by each seed.
"""

from __future__ import annotations

import sys
from logging import getLogger
from pathlib import Path
from typing import Any

import yaml
from recbole.config import Config
from recbole.utils import get_local_time

from recbole_delrec.config import hidden_command_line, isolated_config
from recbole_delrec.evaluation.summary import summarise, summary_table
from recbole_delrec.tune import external_values


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


def run_seeds(seeds: list[int], model: str = "DELRec", dataset: str = "ml-100k",
              config_file_list: list[str] | None = None, config_dict: dict[str, Any] | None = None,
              argv: list[str] | None = None) -> dict[str, Any]:
    """``run_delrec`` once per seed, then :func:`summarise` into ``<checkpoint_dir>/evidence-<dataset>-<time>``.

    ``argv`` (default: the command line) holds ``--key=value`` overrides for every seed.
    """
    from recbole_delrec.delrec.quick_start import run_delrec

    values = external_values(config_file_list, config_dict, argv=sys.argv[1:] if argv is None else argv)
    values.pop("seeds", None)
    run_dirs = []
    for seed in seeds:
        getLogger().info(f"seed {seed} ({len(run_dirs) + 1} of {len(seeds)})")
        with hidden_command_line():  # every value is in config_dict; the seed must win
            result = run_delrec(model=model, dataset=dataset, config_dict={**values, "seed": seed})
        run_dirs.append(result["run_dir"])
    checkpoint_dir = isolated_config(model, dataset, values)["checkpoint_dir"]
    out = Path(checkpoint_dir) / f"evidence-{dataset}-{get_local_time()}"
    summary = summarise(run_dirs, out)
    getLogger().info("\n" + summary_table(summary) + f"\nsummary: {out / 'summary.json'}")
    return {**summary, "summary_dir": str(out)}
