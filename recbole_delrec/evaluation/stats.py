"""Statistics a reviewer asks for: spread across seeds, intervals over users, paired tests.

* Across seeds: mean, sample standard deviation and a 95% Student-t interval of the mean
  (few seeds, unknown variance: t, not normal).
* Over users (one seed): a seeded percentile bootstrap of the mean, resampling users.
  :func:`interval` picks between the two for every summary figure and every bucket.
* DELRec against another model, users paired (both ranked the same users' targets):
  graded metrics (NDCG, MRR) by the Wilcoxon signed-rank test on per-user differences (no
  normality assumed; many users tie at 0 and it drops them, as Wilcoxon's method does);
  Hit@k (and any metric at @1, also 0/1) by the sign test on discordant users, which for 0/1 outcomes *is* the exact
  McNemar test; with several seeds each user's outcome is first averaged over seeds and the
  same two tests run on those means (the sign test then on the signs of the mean differences).
  Identical outcomes give difference 0 and p = 1 by definition.  Up to 13 users the Wilcoxon p is
  exact, by enumerating every sign flip (scipy's own answer there, much faster).
* Many tests at once (DELRec against every row on every metric, every ablation variant):
  Holm's step-down adjustment, which keeps the chance of any false "significant" at 0.05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from recbole_delrec.evaluation.outcomes import parse_metric

ALPHA = 0.05

#: Up to this many users (2**13 sign flips), the signed-rank p is exact by enumeration, as scipy's
#: ``wilcoxon`` computes it there (by its permutation test when there are ties or zeros).
ENUMERATED_WILCOXON = 13


@dataclass(frozen=True)
class Spread:
    """Mean, sample std and 95% half-width of a few values (``ci95`` is None for one value)."""

    mean: float
    std: float
    ci95: float | None
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def across_seeds(values: list[float] | np.ndarray) -> Spread:
    """Student-t 95% interval of the mean of per-seed values: mean +- t(0.975, n-1) * s / sqrt(n)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("across_seeds needs at least one value (one per seed).")
    if v.size == 1:
        return Spread(float(v[0]), 0.0, None, 1)
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, v.size - 1) * std / np.sqrt(v.size))
    return Spread(float(v.mean()), std, half, int(v.size))


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """Percentile 95% bootstrap interval of the mean, resampling users with a seeded generator."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def interval(per_seed: Sequence[np.ndarray], seed: int = 0) -> dict:
    """Mean and 95% interval of one metric from its per-user outcomes, one array per seed.

    Several seeds: Student t over the seeds' means (the seed is the unit that varies).  One
    seed: a bootstrap over its users (no spread across seeds to measure).  ``ci95`` is the
    half-width either way, so tables print one ``mean ± ci95`` form.
    """
    spread = across_seeds([float(v.mean()) for v in per_seed])
    if spread.n == 1:
        low, high = bootstrap_ci(per_seed[0], seed)
        return {**spread.as_dict(), "ci95": (high - low) / 2, "low": low, "high": high,
                "interval": "bootstrap over users"}
    return {**spread.as_dict(), "low": spread.mean - spread.ci95, "high": spread.mean + spread.ci95,
            "interval": "Student t across seeds"}


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison of per-user outcomes ``a`` (DELRec) against ``b``."""

    test: str
    users: int
    difference: float  # mean(a - b) over users
    statistic: float
    pvalue: float

    @property
    def significant(self) -> bool:
        return self.pvalue < ALPHA

    @property
    def verdict(self) -> str:
        word = "significant" if self.significant else "not significant"
        return f"{word} at {ALPHA} (p = {self.pvalue:.3g}, {self.test})"

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "verdict": self.verdict}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of one family of tests, in the order given.

    Each p is read against 0.05 as usual; uncorrected, 18 tests at 0.05 expect about one
    "significant" result from noise alone, which is how a lead gets reported as a finding.
    """
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted.tolist()


def holm_records(pvalues: Mapping[str, float]) -> dict[str, float]:
    """``<key>.pvalue`` and ``<key>.pvalue_holm`` of one family of tests named by key."""
    out = {}
    for (key, p), adjusted in zip(pvalues.items(), holm(list(pvalues.values()))):
        out[f"{key}.pvalue"], out[f"{key}.pvalue_holm"] = p, adjusted
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"Paired outcomes need one value per user on both sides; got shapes {a.shape} and {b.shape}.")
    return a, b


def sign_test(a: np.ndarray, b: np.ndarray, name: str = "sign test") -> PairedTest:
    """Two-sided exact binomial test on the users where ``a`` and ``b`` differ (ties dropped).

    On 0/1 outcomes (Hit@k of one seed) the differing users are McNemar's discordant pairs and
    this is the exact McNemar test.
    """
    a, b = _paired(a, b)
    d = a - b
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = 1.0 if wins + losses == 0 else float(stats.binomtest(wins, wins + losses, 0.5).pvalue)
    return PairedTest(name, int(a.size), float(d.mean()) if d.size else 0.0, float(wins), min(p, 1.0))


def wilcoxon_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test on per-user differences (zero differences dropped)."""
    a, b = _paired(a, b)
    d = a - b
    if not np.any(d != 0):
        return PairedTest("Wilcoxon signed-rank", int(a.size), 0.0, 0.0, 1.0)
    if d.size <= ENUMERATED_WILCOXON:
        statistic, pvalue = _enumerated_signed_rank(d)
    else:
        result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        statistic, pvalue = float(result.statistic), float(result.pvalue)
    return PairedTest("Wilcoxon signed-rank", int(a.size), float(d.mean()), statistic, min(pvalue, 1.0))


def _enumerated_signed_rank(d: np.ndarray) -> tuple[float, float]:
    """``(min(R+, R-), two-sided p)`` of the signed-rank sum over every sign flip of the nonzero
    differences: scipy's own answer for small samples, without the ~0.5 s its general
    permutation machinery takes per call (a bucket test of a small data set runs hundreds)."""
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    flips = (np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1  # row: which differences are positive
    null = flips @ ranks
    observed = float(ranks[d > 0].sum())
    tolerance = 1e-12 * max(abs(observed), 1.0)  # ranks of ties are halves: compare sums with a margin
    greater, less = np.mean(null >= observed - tolerance), np.mean(null <= observed + tolerance)
    return min(observed, float(ranks.sum()) - observed), float(min(1.0, 2 * min(greater, less)))


def paired_test(metric: str, a: np.ndarray, b: np.ndarray, seeds: int = 1) -> PairedTest:
    """The test this module uses for ``metric``: sign/McNemar for 0/1 outcomes (Hit@k, any
    metric at @1), Wilcoxon for graded ones."""
    name, k = parse_metric(metric)
    if name == "hit" or k == 1:
        name = "exact McNemar (sign test on discordant users)" if seeds == 1 else "sign test on per-user seed means"
        return sign_test(a, b, name)
    return wilcoxon_test(a, b)
