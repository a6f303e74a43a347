"""Straightforward, loop-by-loop versions of the metrics: the oracle for the vectorised ones.

AP follows the original Oxford ``compute_ap.cpp`` formulation (walk the ranked list, skip junk, trapezoid
between consecutive recall levels); precision@k counts positives in the first min(last positive, k).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def slow_ap(ranking: Sequence[int], positives: Iterable[int], junk: Iterable[int]) -> float:
    positives, junk = set(positives), set(junk)
    if not positives:
        return math.nan
    ap, old_recall, old_precision, found, rank = 0.0, 0.0, 1.0, 0, 0
    for item in ranking:
        if item in junk:
            continue
        if item in positives:
            found += 1
        recall, precision = found / len(positives), found / (rank + 1)
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
        rank += 1
    return ap


def slow_precision(ranking: Sequence[int], positives: Iterable[int], junk: Iterable[int], k: int) -> float:
    positives, junk = set(positives), set(junk)
    if not positives:
        return math.nan
    kept = [item for item in ranking if item in positives or item not in junk]
    hits = [i + 1 for i, item in enumerate(kept) if item in positives]
    last = hits[-1] if len(hits) == len(positives) else math.inf
    kq = min(last, k)
    return sum(1 for h in hits if h <= kq) / kq


def slow_first_hit(predictions: Sequence[int], utm_q: Sequence[float], utm_db, threshold: float,
                   panorama_size: int | None = None) -> int:
    seen, rank = set(), 0
    for db_id in predictions:
        group = db_id // panorama_size if panorama_size else db_id
        if group in seen:
            continue
        seen.add(group)
        rank += 1
        dx, dy = utm_db[db_id][0] - utm_q[0], utm_db[db_id][1] - utm_q[1]
        if dx * dx + dy * dy <= threshold * threshold:
            return rank
    return 0
