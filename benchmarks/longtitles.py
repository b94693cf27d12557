"""A long-title catalogue run with DELRec's default settings, recorded as ``longtitles.default``.

    python benchmarks/longtitles.py [--users 500] [--items 2000] [--folder DIR] [--key=value ...]

Generates a product catalogue whose titles run to 40-80 words (more T5 or scratch tokens
still: far beyond ``max_prompt_title_tokens``), ~12-20 interactions per user in time order,
as RecBole atomic files in ``DIR/longtitles/`` (default: ``saved/longtitles-data``), then runs the
default command on it through ``benchmarks/run.py`` with ``--name=longtitles.default``: only
what any new data set must say (``load_col`` with the title column, ``title_field``,
``domain``) is set, every prompt and model setting is DELRec's default.  Records land in
``benchmarks/results/longtitles.default.json``; ``--key=value`` arguments go to RecBole's Config.
A full run trains the teacher, stage 1 and stage 2: minutes to an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.generated import LOAD_COL, titles, write_atomic  # noqa: E402

#: What a user writes for any new data set (see docs/your-own-dataset.md); nothing else.
USER_YAML = {"load_col": LOAD_COL, "title_field": "title", "title_year_field": None, "domain": "products"}


def generate(folder: Path, n_users: int, n_items: int, seed: int = 0) -> None:
    """``folder/longtitles/longtitles.{inter,item}``: popularity-skewed sequences, long titles."""
    import numpy as np

    rng = np.random.default_rng(seed)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    users = {
        f"u{user}": [f"i{item}" for item in rng.choice(np.arange(1, n_items + 1), size=rng.integers(12, 21),
                                                       replace=False, p=popularity)]
        for user in range(1, n_users + 1)
    }
    write_atomic(folder, "longtitles", users, titles(n_items, (40, 80), seed, vocabulary=3000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--folder", default="saved/longtitles-data",
                        help="where to write longtitles/, relative to the checkout (recorded commands name it)")
    args, rest = parser.parse_known_args()
    folder = REPO / args.folder
    generate(folder, args.users, args.items)
    config = Path(args.folder) / "longtitles.yaml"
    (REPO / config).write_text(json.dumps(USER_YAML), encoding="utf-8")  # JSON is YAML
    command = [sys.executable, "benchmarks/run.py", "--name=longtitles.default", "--dataset=longtitles",
               f"--config_files={config}", f"--data_path={args.folder}", *rest]
    print(" ".join(command[1:]), flush=True)
    sys.exit(subprocess.run(command, cwd=REPO).returncode)


if __name__ == "__main__":
    main()
