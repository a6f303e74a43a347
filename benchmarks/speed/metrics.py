"""How long scoring takes at the largest published scales.

- revisited: 70 queries, full rankings of ROxford5k + 1M distractors (1,001,001 database images).
- recall: Pitts250k-test scale, 8280 queries x top-100 predictions over 83,952 database images.
Ground truth is random with ROxford-like list sizes; the rankings are random permutations (the cost of
scoring does not depend on their quality).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.evaluation.metrics import recall_at_n, revisited_scores
from benchmarks.speed import best_of, machine


def revisited_case(n_db: int, n_queries: int, seed: int = 0):
    """(ranks (n_queries, n_db) int64, easy, hard, junk) with 30 / 40 / 60 ids per query among the first 4993."""
    rng = np.random.default_rng(seed)
    labelled = [rng.choice(min(4993, n_db), size=min(130, n_db), replace=False) for _ in range(n_queries)]
    easy, hard, junk = ([ids[a:b] for ids in labelled] for a, b in ((0, 30), (30, 70), (70, 130)))
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_queries)])
    return ranks, easy, hard, junk


def _time_revisited(n_db: int, n_queries: int, repeat: int) -> float:
    ranks, easy, hard, junk = revisited_case(n_db, n_queries)
    return best_of(repeat, lambda: revisited_scores(ranks, easy, hard, junk, n_db))


def run(n_db: int = 1_001_001, n_queries: int = 70, repeat: int = 3) -> dict[str, Any]:
    """Best-of-``repeat`` wall times in seconds, with the machine and versions."""
    revisited_s = _time_revisited(n_db, n_queries, repeat)
    rng = np.random.default_rng(1)
    utm_db = rng.uniform(0, 5000, size=(83_952, 2))
    utm_q = rng.uniform(0, 5000, size=(8280, 2))
    predictions = np.stack([rng.choice(83_952, size=100, replace=False) for _ in range(8280)])
    recall_s = best_of(repeat, lambda: recall_at_n(predictions, utm_q, utm_db, 25.0, ns=(1, 5, 10, 20, 100)))
    return {
        "benchmark": "metrics",
        "revisited": {"n_queries": n_queries, "n_db": n_db, "ranking_depth": n_db, "seconds": round(revisited_s, 3)},
        "recall": {"n_queries": 8280, "n_db": 83_952, "k": 100, "seconds": round(recall_s, 3)},
        "repeat": repeat,
        "environment": machine(),
    }
