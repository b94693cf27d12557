"""How the LLM's tokenizer splits a catalogue's titles, and whether the claims rows pick by length.

    python benchmarks/titles.py [--prefix=ml100k.smollm2] [--dataset=ml-100k] [--key=value ...]

An LLM scores a candidate by the mean log-likelihood of its title's tokens, so a title that
the tokenizer cuts into many pieces (a foreign title, a long one) is read differently from a
short common one, and the score may prefer one length whatever the user's history.  This
reads the committed per-user records of the claims table (``benchmarks/results/claims/<prefix>/``,
every seed and row), tokenises the data set's titles as a run does (the default LLM, or
``--llm_path``), and records in ``benchmarks/results/<prefix>.titles.json`` (keys behind
``<prefix>.titles.``):

- ``tokens.mean``/``.p95``/``.max`` and ``tokens_per_word.mean``/``.p95``: how titles split;
- ``<row>.top1_length_percentile``: where the row's top-1 title sits by token count among its
  user's candidates (0 shortest, 1 longest; a model blind to length sits at the target's own
  ``target.top1_length_percentile`` on average), over users and seeds, with ``.pvalue``, the
  user-paired Wilcoxon test of the row against the target's;
- ``by_length.<short|middle|long>.users`` and ``by_length.<bucket>.<row>.hit@1``: Hit@1 by the
  target title's token count (terciles of the test targets), over seeds, with DELRec's paired
  test against each row inside each tercile (``by_length.<bucket>.delrec_vs_<row>.hit@1.pvalue``
  and ``.pvalue_holm``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (the one owner of the records' device name)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BUCKETS = ("short", "middle", "long")


def title_lengths(dataset_name: str, overrides: dict) -> tuple[dict[str, int], dict[str, float]]:
    """Each item token's scored title length (LLM tokens) and tokens per word, as a run tokenises."""
    from recbole_delrec.config import isolated_config
    from recbole_delrec.data.titles import ItemText
    from recbole_delrec.llm.loading import load_backbone
    from recbole_delrec.runs.startup import prepare_data

    config = isolated_config("DELRec", dataset_name, {"show_progress": False, **overrides})
    dataset = prepare_data(config)[0]._dataset
    text = ItemText.from_dataset(dataset, config["title_field"], config["title_year_field"])
    _, answers = load_backbone(config, text.titles[1:]).title_ids(text.titles)
    tokens = dataset.field2id_token[dataset.iid_field]
    lengths = {tokens[i]: len(answers[i]) for i in range(1, len(text))}
    per_word = {tokens[i]: len(answers[i]) / max(len(text[i].split()), 1) for i in range(1, len(text))}
    return lengths, per_word


def seed_frames(folders: list[Path]) -> list[pd.DataFrame]:
    """Each seed's users with their candidates, target and every row's ``rank.<row>``/``top1.<row>``,
    merged and checked as the claims table merges them (same users, same candidates)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import claims

    with tempfile.TemporaryDirectory() as tmp:
        merged = [Path(tmp) / folder.name for folder in folders]
        for folder, out in zip(folders, merged):
            claims.merged_seed(folder, out)
        return claims.read_frames(merged)


def length_percentile(frame: pd.DataFrame, column: str, lengths: dict[str, int]) -> np.ndarray:
    """Per user: the mid-rank of ``column``'s title length among the candidates', scaled to [0, 1]."""
    out = np.empty(len(frame))
    for i, (pick, candidates) in enumerate(zip(frame[column], frame["candidates"])):
        own = np.array([lengths[c] for c in candidates])
        length = lengths[pick]
        out[i] = ((own < length).sum() + ((own == length).sum() - 1) / 2) / (len(own) - 1)
    return out


def summarise(frames: list[pd.DataFrame], lengths: dict[str, int], per_word: dict[str, float]) -> dict[str, float]:
    """The recorded figures (see the module's docstring), over every seed's frame."""
    from recbole_delrec.evaluation.stats import wilcoxon_test

    values = np.array(list(lengths.values()), dtype=float)
    words = np.array(list(per_word.values()))
    out = {"tokens.mean": values.mean(), "tokens.p95": np.quantile(values, 0.95), "tokens.max": values.max(),
           "tokens_per_word.mean": words.mean(), "tokens_per_word.p95": np.quantile(words, 0.95)}
    frames = [f.assign(**{"top1.target": f["target"]}) for f in frames]
    rows = sorted(c.split(".", 1)[1] for c in frames[0].columns if c.startswith("top1."))
    seeds_common = set.intersection(*[set(f.columns) for f in frames])
    rows = [r for r in rows if f"top1.{r}" in seeds_common]
    target = np.mean([length_percentile(f, "top1.target", lengths) for f in frames], axis=0)
    for row in rows:
        mean = np.mean([length_percentile(f, f"top1.{row}", lengths) for f in frames], axis=0)
        out[f"{row}.top1_length_percentile"] = mean.mean()
        if row != "target":
            out[f"{row}.top1_length_percentile.pvalue"] = wilcoxon_test(mean, target).pvalue
    out.update(by_length(frames, [r for r in rows if r != "target"], frames[0]["target"].map(lengths).to_numpy()))
    return out


def by_length(frames: list[pd.DataFrame], rows: list[str], size: np.ndarray) -> dict[str, float]:
    """Hit@1 per target-length tercile (ties stay in the lower one), with DELRec's sign test
    against every row inside each tercile on per-user seed means, Holm over all of them."""
    from recbole_delrec.evaluation.stats import holm_records, paired_test

    cuts = np.quantile(size, (1 / 3, 2 / 3))
    bucket = np.array(BUCKETS)[np.searchsorted(cuts, size, side="left")]
    hits = {row: np.mean([(f[f"rank.{row}"].to_numpy() == 1) for f in frames], axis=0) for row in rows}
    out, tests = {}, {}
    for name in BUCKETS:
        members = bucket == name
        out[f"by_length.{name}.users"] = int(members.sum())
        out[f"by_length.{name}.max_tokens"] = float(size[members].max()) if members.any() else 0.0
        for row in rows:
            out[f"by_length.{name}.{row}.hit@1"] = float(hits[row][members].mean()) if members.any() else 0.0
            if row != "delrec" and "delrec" in hits and members.any():
                tests[f"by_length.{name}.delrec_vs_{row}.hit@1"] = paired_test(
                    "hit@1", hits["delrec"][members], hits[row][members], len(frames)).pvalue
    return {**out, **holm_records(tests)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default="ml100k.smollm2")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--device", default=machine.device_name(), help="the machine's name in the records")
    args, rest = parser.parse_known_args()
    sys.path.insert(0, str(REPO))
    from recbole_delrec.config import external_values

    overrides = external_values(argv=rest)
    folders = sorted((RESULTS / "claims" / args.prefix).glob("seed-*"))
    if not folders:
        raise SystemExit(f"No seed folders under benchmarks/results/claims/{args.prefix}: run benchmarks/claims.py first.")
    lengths, per_word = title_lengths(args.dataset, overrides)
    figures = summarise(seed_frames(folders), lengths, per_word)
    command = "python benchmarks/titles.py " + " ".join(sys.argv[1:])
    date = datetime.date.today().isoformat()
    records = [{"metric": f"{args.prefix}.titles.{k}", "value": float(f"{v:.3g}") if k.endswith(("pvalue", "pvalue_holm")) else round(float(v), 4),
                "unit": "", "device": args.device, "date": date, "command": command.strip()} for k, v in figures.items()]
    (RESULTS / f"{args.prefix}.titles.json").write_text(json.dumps(records, indent=2) + "\n")
    for record in records:
        print(f"{record['metric']:<70} {record['value']}")


if __name__ == "__main__":
    main()
