"""Command line: ``python run_delrec.py --model=DELRec --dataset=ml-100k [--key=value ...]``.

Like RecBole's ``run_recbole.py``: ``--config_files`` takes space-separated YAML files, and
any other ``--key=value`` overrides a configuration value (RecBole reads them itself).
"""

import argparse

from recbole_delrec import run_delrec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", "-m", default="DELRec")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    args, _ = parser.parse_known_args()
    files = args.config_files.strip().split(" ") if args.config_files else None
    run_delrec(model=args.model, dataset=args.dataset, config_file_list=files)


if __name__ == "__main__":
    main()
