"""Paired comparison of two runs on the same queries, as retrieval papers argue a difference.

Each result keeps one value per query: AP (revisited per difficulty, or the original protocol) or, for Recall@N,
whether a correct image is among the first N (1 or 0). The difference of the means (B - A, in points) gets a
percentile bootstrap 95% confidence interval (queries resampled with replacement) and a two-sided paired
permutation test (the sign of each query's difference flipped at random); both draw from a seeded generator, so
the same inputs give the same figures.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.core.errors import InputError
from benchmarks.evaluation.results import RunResult
from benchmarks.reports.matching import percent

RESAMPLES = 10_000
_CHUNK = 500  # resamples drawn at a time: memory stays at _CHUNK x n_queries


@dataclass(frozen=True)
class Comparison:
    """Per-query values (fractions) of A and B over the queries both score, and the paired statistics (points)."""

    measure: str                 # "ap_medium", "ap", "hit@1"
    queries: np.ndarray          # (n,) indices into the dataset's query list
    a: np.ndarray                # (n,)
    b: np.ndarray                # (n,)
    ci_low: float
    ci_high: float
    p_value: float
    resamples: int

    @property
    def difference(self) -> float:
        return percent(float(np.mean(self.b - self.a)))

    def most_changed(self, k: int = 10) -> np.ndarray:
        """Positions (into ``queries``) of the k largest |B - A|, largest first, ties by query order."""
        return np.argsort(-np.abs(self.b - self.a), kind="stable")[:k]


def per_query(result: RunResult, setting: str, n: int, where: str) -> tuple[str, list[float | None]]:
    """(measure, values) of one result: ``ap_<setting>`` (revisited), ``ap`` (oxford) or ``hit@n`` (recall)."""
    if result.protocol == "recall":
        recall_n = f"recall@{n}"
        if recall_n not in result.metrics:
            raise InputError(f"the result has no {recall_n} (it has {sorted(result.metrics)})", where)
        return f"hit@{n}", [0.0 if rank is None else float(rank <= n) for rank in result.per_query["first_hit"]]
    measure = f"ap_{setting}" if result.protocol == "revisited" else "ap"
    if measure not in result.per_query:
        raise InputError(f"the result keeps no per-query {measure} (it has {sorted(result.per_query)})", where)
    return measure, result.per_query[measure]


def compare(a: RunResult, b: RunResult, setting: str = "medium", n: int = 1, resamples: int = RESAMPLES,
            seed: int = 0, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare B against A on the same queries; raises :class:`InputError` if they are not the same queries."""
    if (a.dataset, a.protocol, a.provenance.ground_truth_sha256) != (b.dataset, b.protocol,
                                                                     b.provenance.ground_truth_sha256):
        raise InputError(f"{names[0]} ({a.dataset}) and {names[1]} ({b.dataset}) are not scored on the same "
                         "queries and ground truth (dataset, protocol or ground-truth sha256 differ)")
    measure, values_a = per_query(a, setting, n, names[0])
    _, values_b = per_query(b, setting, n, names[1])
    if len(values_a) != len(values_b):
        raise InputError(f"{names[0]} has {len(values_a)} per-query values, {names[1]} {len(values_b)}")
    kept = [i for i, (x, y) in enumerate(zip(values_a, values_b, strict=True)) if x is not None and y is not None]
    if not kept:
        raise InputError(f"no query is scored in both {names[0]} and {names[1]}")
    va = np.array([values_a[i] for i in kept], dtype=np.float64)
    vb = np.array([values_b[i] for i in kept], dtype=np.float64)
    low, high, p = _paired_statistics(vb - va, resamples, np.random.default_rng(seed))
    return Comparison(measure, np.array(kept), va, vb, percent(low), percent(high), p, resamples)


def _paired_statistics(d: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(2.5th and 97.5th percentile of bootstrapped mean differences, permutation p-value) of differences ``d``."""
    observed = abs(d.mean())
    means, extreme = [], 0
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        means.append(d[rng.integers(0, d.size, (size, d.size))].mean(axis=1))
        flipped = np.abs((rng.choice([-1.0, 1.0], (size, d.size)) * d).mean(axis=1))
        extreme += int(np.count_nonzero(flipped >= observed - 1e-12))  # ties count: exact zeros give p = 1
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(low), float(high), (extreme + 1) / (resamples + 1)
