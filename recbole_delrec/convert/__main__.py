"""Command line: ``python -m recbole_delrec.convert {amazon2014,steam} ...``.

Bad input (malformed line, missing key, unreadable file) prints one error naming the file
and line, exits with status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .amazon2014 import convert_amazon2014
from .atomic import ConversionError
from .steam import convert_steam

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_delrec.convert",
        description="Convert public raw recommendation data to RecBole atomic files.",
    )
    commands = parser.add_subparsers(dest="dataset", required=True)

    amazon = commands.add_parser("amazon2014", help="Amazon 2014 reviews_<Cat>_5 + meta_<Cat>")
    amazon.add_argument("--reviews", type=Path, required=True, help="reviews_<Cat>_5.json(.gz)")
    amazon.add_argument("--meta", type=Path, required=True, help="meta_<Category>.json(.gz)")
    amazon.add_argument("--name", required=True, help="data set name, e.g. Amazon_Beauty")

    steam = commands.add_parser("steam", help="Kang & McAuley Steam reviews + games")
    steam.add_argument("--reviews", type=Path, required=True, help="steam_reviews.json(.gz)")
    steam.add_argument("--games", type=Path, required=True, help="steam_games.json(.gz)")
    steam.add_argument("--name", default="steam", help="data set name (default: steam)")

    for sub in (amazon, steam):
        sub.add_argument("--out", type=Path, required=True, help="folder that receives <name>/")
        sub.add_argument("--k-core", type=int, default=5, help="k-core filter; 0 or 1 disables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one conversion and print its counts; return the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.dataset == "amazon2014":
            stats = convert_amazon2014(args.reviews, args.meta, args.out, args.name, args.k_core)
        else:
            stats = convert_steam(args.reviews, args.games, args.out, args.name, args.k_core)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.out / args.name}")
    for key, value in stats.items():
        print(f"{key.replace('_', ' ')}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
