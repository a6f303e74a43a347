"""Retrieval metrics, pure numpy, exact to the published protocols.

- Revisited Oxford/Paris (Radenovic et al., CVPR 2018): mAP and mP@k for the Easy, Medium and Hard
  settings. Junk images are removed from the ranking; AP is the trapezoid rule over all positives of the
  query (retrieved or not); mP@k divides by min(rank of the last positive, k); queries without positives
  are excluded from the mean.
- The original Oxford5k/Paris6k protocol (Philbin et al., CVPR 2007): the same AP with good + ok as
  positives and junk removed.
- Recall@N for place recognition (Arandjelovic et al., CVPR 2016): a query counts when one of its first N
  predictions lies within the distance threshold (inclusive); every query is in the denominator. Tokyo
  24/7's panorama collapse keeps the first-ranked cutout of each panorama before cutting at N.

Rankings may be truncated (k < number of database images): positives missing from a ranking are taken
as ranked after its end, so they add nothing to AP and the rank of the last positive is beyond the list.
Identifiers are 0-based database indices. Bad input raises :class:`benchmarks.core.errors.InputError`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.core.errors import InputError

KAPPAS: tuple[int, ...] = (1, 5, 10)
RECALL_NS: tuple[int, ...] = (1, 5, 10, 20)
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")

IdLists = Sequence[np.ndarray]
Source = str | Path | None


@dataclass(frozen=True)
class RankingScores:
    """Per-query AP and precision@k of one setting; NaN marks a query without positives (excluded)."""

    ap: np.ndarray  # (n_queries,) float64
    precision: Mapping[int, np.ndarray]  # k -> (n_queries,) float64

    @property
    def n_queries(self) -> int:
        """Queries scored (those with at least one positive)."""
        return int(np.count_nonzero(~np.isnan(self.ap)))

    @property
    def map(self) -> float:
        return _mean_of_scored(self.ap)

    def mp(self, k: int) -> float:
        return _mean_of_scored(self.precision[k])

    def ap_list(self) -> list[float | None]:
        """Per-query AP for JSON: None where the query is excluded."""
        return [None if math.isnan(v) else float(v) for v in self.ap]

    def to_dict(self) -> dict[str, object]:
        """``{"map", "mp@1", ..., "n_queries", "ap": [per query, None where excluded]}``, fractions."""
        out: dict[str, object] = {"map": self.map}
        out.update({f"mp@{k}": self.mp(k) for k in self.precision})
        out["n_queries"] = self.n_queries
        out["ap"] = self.ap_list()
        return out


@dataclass(frozen=True)
class RecallScores:
    """Place-recognition scores: the 1-based rank of each query's first correct prediction (0: none)."""

    first_hit: np.ndarray  # (n_queries,) int64, 0 where no prediction in the list is correct
    ns: tuple[int, ...]

    @property
    def n_queries(self) -> int:
        return int(self.first_hit.shape[0])

    def recall(self, n: int) -> float:
        hit = (self.first_hit > 0) & (self.first_hit <= n)
        return float(np.mean(hit)) if hit.size else math.nan

    def first_hit_list(self) -> list[int | None]:
        """Per-query first-hit rank for JSON: None where no prediction in the list is correct."""
        return [int(r) if r > 0 else None for r in self.first_hit]

    def to_dict(self) -> dict[str, object]:
        """``{"recall@1", ..., "n_queries", "first_hit": [1-based rank or None per query]}``, fractions."""
        out: dict[str, object] = {f"recall@{n}": self.recall(n) for n in self.ns}
        out["n_queries"] = self.n_queries
        out["first_hit"] = self.first_hit_list()
        return out


def _mean_of_scored(values: np.ndarray) -> float:
    scored = values[~np.isnan(values)]
    return float(scored.mean()) if scored.size else math.nan


def validate_ids(ids: object, n_db: int, n_queries: int, what: str, source: Source) -> np.ndarray:
    """Check a (n_queries, k) array of 0-based database ids: shape, integer dtype, range. Returns int64."""
    if not isinstance(ids, np.ndarray):
        raise InputError(f"{what} must be a numpy array, got {type(ids).__name__}", source)
    if ids.ndim != 2:
        raise InputError(f"{what} must be 2-D (n_queries, k), got shape {ids.shape}", source)
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{what} must hold integer database ids, got dtype {ids.dtype}", source)
    if ids.shape[0] != n_queries:
        raise InputError(
            f"{what} has {ids.shape[0]} rows but the ground truth has {n_queries} queries (one row per query)",
            source,
        )
    if ids.shape[1] == 0:
        raise InputError(f"{what} is empty: each query needs at least one ranked database id", source)
    lowest, highest = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if lowest < 0 or highest >= n_db:
        bad = lowest if lowest < 0 else highest
        raise InputError(f"{what} holds id {bad}, outside the database's 0..{n_db - 1} (ids are 0-based)", source)
    return ids.astype(np.int64, copy=False)


def _duplicate_error(what: str, query: int, row: np.ndarray, source: Source) -> InputError:
    values, counts = np.unique(row, return_counts=True)
    return InputError(f"{what} row {query} lists database id {int(values[counts > 1][0])} more than once", source)


def _average_precision(positions: np.ndarray, n_positives: int) -> float:
    """Trapezoid-rule AP from the sorted 0-based ranks of the retrieved positives (junk already removed)."""
    j = np.arange(positions.size, dtype=np.float64)
    ranks = positions.astype(np.float64)
    before = np.divide(j, ranks, out=np.ones_like(ranks), where=ranks > 0)  # precision just before each positive
    after = (j + 1.0) / (ranks + 1.0)  # precision at each positive
    return float(np.sum(before + after) / (2.0 * n_positives))


def _precision_at(positions: np.ndarray, all_retrieved: bool, k: int) -> float:
    """Precision at min(rank of the last positive, k); a positive missing from the list lies beyond it."""
    last = int(positions[-1]) + 1 if all_retrieved else math.inf
    kq = min(last, k)
    return float(np.count_nonzero(positions < kq) / kq)


def ranking_scores(
    ranks: np.ndarray,
    settings: Mapping[str, tuple[IdLists, IdLists]],
    n_db: int,
    kappas: Sequence[int] = KAPPAS,
    source: Source = None,
    what: str = "ranking",
) -> dict[str, RankingScores]:
    """Score one ranking per query under several (positives, junk) settings.

    ``ranks``: (n_queries, k) 0-based database ids, best first, no id twice in a row. ``settings`` maps a
    name to per-query arrays of positive ids and junk ids (both 0-based). Each row is scattered once into a
    database-sized position table that serves every setting: O(n_db + k) per query, no sorting of rows.
    """
    n_queries = len(next(iter(settings.values()))[0])
    ranks = validate_ids(ranks, n_db, n_queries, what, source)
    k = ranks.shape[1]
    order = np.arange(k, dtype=np.int64)
    ap = {name: np.full(n_queries, np.nan) for name in settings}
    precision = {name: {kk: np.full(n_queries, np.nan) for kk in kappas} for name in settings}
    for q in range(n_queries):
        row = ranks[q]
        position = np.full(n_db, -1, dtype=np.int64)  # database id -> 0-based position in this row
        position[row] = order
        if np.count_nonzero(position >= 0) != k:  # fewer distinct ids than entries
            raise _duplicate_error(what, q, row, source)
        for name, (positives, junk) in settings.items():
            ok = np.asarray(positives[q], dtype=np.int64)
            if ok.size == 0:
                continue
            pos = position[ok]
            pos = np.sort(pos[pos >= 0])
            junk_pos = position[np.asarray(junk[q], dtype=np.int64)]
            junk_pos = np.sort(junk_pos[junk_pos >= 0])
            pos = pos - np.searchsorted(junk_pos, pos)  # junk ranked before a positive does not count
            ap[name][q] = _average_precision(pos, ok.size)
            for kk in kappas:
                precision[name][kk][q] = _precision_at(pos, pos.size == ok.size, kk)
    return {name: RankingScores(ap[name], precision[name]) for name in settings}


def revisited_scores(
    ranks: np.ndarray,
    easy: IdLists,
    hard: IdLists,
    junk: IdLists,
    n_db: int,
    kappas: Sequence[int] = KAPPAS,
    source: Source = None,
) -> dict[str, RankingScores]:
    """Revisited Oxford/Paris: ``{"easy", "medium", "hard"}`` scores of (n_queries, k) rankings.

    Easy: positives easy, junk junk + hard. Medium: positives easy + hard, junk junk. Hard: positives hard,
    junk junk + easy.
    """
    easy_hard, junk_hard, junk_easy = _union(easy, hard), _union(junk, hard), _union(junk, easy)
    settings = {"easy": (easy, junk_hard), "medium": (easy_hard, junk), "hard": (hard, junk_easy)}
    return ranking_scores(ranks, settings, n_db, kappas, source)


def _union(a: IdLists, b: IdLists) -> list[np.ndarray]:
    """Per-query concatenation of two id lists."""
    return [np.concatenate([np.asarray(x, np.int64), np.asarray(y, np.int64)]) for x, y in zip(a, b, strict=True)]


def oxford_scores(
    ranks: np.ndarray, positives: IdLists, junk: IdLists, n_db: int, kappas: Sequence[int] = KAPPAS,
    source: Source = None,
) -> RankingScores:
    """The original Oxford5k/Paris6k protocol: positives good + ok, junk removed from the ranking."""
    return ranking_scores(ranks, {"oxford": (positives, junk)}, n_db, kappas, source)["oxford"]


def recall_at_n(
    predictions: np.ndarray,
    utm_queries: np.ndarray,
    utm_db: np.ndarray,
    threshold: float = 25.0,
    ns: Sequence[int] = RECALL_NS,
    panorama_size: int | None = None,
    source: Source = None,
) -> RecallScores:
    """Recall@N of (n_queries, k) predictions (0-based ids, best first) against UTM coordinates.

    A prediction is correct when its squared distance to the query is at most ``threshold**2`` (the dbStruct
    ``posDistSqThr`` convention). With ``panorama_size`` G, database ids ``g*G .. g*G+G-1`` are one panorama:
    each row keeps the first-ranked cutout of each panorama before it is cut at N.
    """
    utm_queries = np.asarray(utm_queries, dtype=np.float64)
    utm_db = np.asarray(utm_db, dtype=np.float64)
    n_db = utm_db.shape[0]
    ns = tuple(sorted(set(int(n) for n in ns)))
    if not ns or ns[0] < 1:
        raise InputError(f"recall cut-offs must be positive integers, got {ns}", source)
    pred = validate_ids(predictions, n_db, utm_queries.shape[0], "predictions", source)
    ordered = np.sort(pred, axis=1)
    dup_rows = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if dup_rows.size:
        raise _duplicate_error("predictions", int(dup_rows[0]), pred[dup_rows[0]], source)

    if panorama_size is None:
        keep = np.ones(pred.shape, dtype=bool)
        n_entities = n_db
    else:
        if panorama_size < 1 or n_db % panorama_size:
            raise InputError(
                f"--panorama-size {panorama_size} does not divide the {n_db} database images into panoramas",
                source,
            )
        keep = _first_of_each_group(pred // panorama_size)
        n_entities = n_db // panorama_size
    collapsed_rank = np.cumsum(keep, axis=1)  # 1-based rank among the kept predictions
    diff = utm_db[pred] - utm_queries[:, None, :]
    correct = keep & (np.einsum("qkc,qkc->qk", diff, diff) <= float(threshold) ** 2)
    has_hit = correct.any(axis=1)
    first = np.argmax(correct, axis=1)
    first_hit = np.where(has_hit, collapsed_rank[np.arange(pred.shape[0]), first], 0).astype(np.int64)

    listed = collapsed_rank[:, -1]
    unknown = ~has_hit & (listed < ns[-1]) & (listed < n_entities)
    if unknown.any():
        q = int(np.flatnonzero(unknown)[0])
        unit = "distinct panoramas" if panorama_size else "predictions"
        raise InputError(
            f"recall@{ns[-1]} is undetermined: query {q} has no correct prediction among its {int(listed[q])}"
            f" {unit}; give at least {ns[-1]} {unit} per query (more columns) or smaller --n",
            source,
        )
    return RecallScores(first_hit, ns)


def _first_of_each_group(groups: np.ndarray) -> np.ndarray:
    """(Q, k) bool: True where an entry is the first (leftmost) of its group value within its row."""
    order = np.argsort(groups, axis=1, kind="stable")
    ordered = np.take_along_axis(groups, order, axis=1)
    first = np.ones(groups.shape, dtype=bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = np.empty_like(first)
    np.put_along_axis(keep, order, first, axis=1)
    return keep
