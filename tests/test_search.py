"""Exact search through faiss against the numpy reference (ties by index, database blocks, k > n_db), and
rankings cut deep enough for exact mAP against full rankings."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from benchmarks.evaluation.evaluate import _score
from benchmarks.evaluation.metrics import oxford_scores, recall_at_n, revisited_scores
from benchmarks.evaluation.search import ExactSearch, blas_tiles, first_k, rank_by_inner_product, ranking_holding
from datasets.base import OxfordGroundTruth, PlaceGroundTruth, RevisitedGroundTruth


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def integer_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Values in {-1, 0, 1}: inner products are exact in float32 and tie very often."""
    return rng.integers(-1, 2, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 7, 50, 74])
@pytest.mark.parametrize("block_rows", [300, 64, 37, 1])
def test_faiss_top_k_is_the_reference_ranking_cut_at_k(k: int, block_rows: int) -> None:
    rng = np.random.default_rng(k)
    queries, db = unit_rows(rng, 23, 16), unit_rows(rng, 300, 16)
    top = ExactSearch(db, block_bytes=4 * 16 * block_rows).top_k(queries, k)  # 4k < 300: the faiss path
    assert top.dtype == np.int64 and top.shape == (23, k)
    np.testing.assert_array_equal(top, rank_by_inner_product(queries, db)[:, :k])


@pytest.mark.parametrize("k", [1, 3, 20, 74])
@pytest.mark.parametrize("block_rows", [300, 100, 33])
def test_faiss_top_k_breaks_ties_by_index(k: int, block_rows: int) -> None:
    rng = np.random.default_rng(7)
    queries, db = integer_rows(rng, 31, 3), integer_rows(rng, 300, 3)
    reference = rank_by_inner_product(queries, db)
    kth = np.take_along_axis(queries @ db.T, reference[:, k - 1:k + 1], axis=1)
    assert (kth[:, 0] == kth[:, 1]).sum() >= 20  # most lists end inside a run of ties
    np.testing.assert_array_equal(ExactSearch(db, block_bytes=4 * 3 * block_rows).top_k(queries, k),
                                  reference[:, :k])


@pytest.mark.parametrize("k", [299, 300, 301, 10_000])
def test_deep_lists_and_k_beyond_the_database(k: int) -> None:
    rng = np.random.default_rng(1)
    queries, db = integer_rows(rng, 5, 4), integer_rows(rng, 300, 4)
    top = ExactSearch(db).top_k(queries, k)
    assert top.shape == (5, min(k, 300))
    np.testing.assert_array_equal(top, rank_by_inner_product(queries, db)[:, :k])


def test_float64_input_is_searched_in_float32() -> None:
    rng = np.random.default_rng(2)
    queries, db = unit_rows(rng, 9, 8), unit_rows(rng, 500, 8)
    np.testing.assert_array_equal(ExactSearch(db.astype(np.float64), block_bytes=8 * 8 * 70).top_k(queries, 10),
                                  ExactSearch(db).top_k(queries.astype(np.float64), 10))


def test_empty_cases() -> None:
    db = np.eye(4, dtype=np.float32)
    assert ExactSearch(db).top_k(np.zeros((0, 4), np.float32), 2).shape == (0, 2)
    assert ExactSearch(db).top_k(np.ones((3, 4), np.float32), 0).shape == (3, 0)


def test_first_k_orders_ties_whatever_the_search_returns() -> None:
    """A search that returns tied items in reverse index order, and only as deep as asked."""
    scores = np.array([[5, 3, 3, 3, 3, 3, 1, 0], [2, 2, 2, 2, 2, 2, 2, 2]], dtype=np.float32)
    depths = []

    def reversed_ties(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        depths.append(depth)
        order = np.lexsort((-np.arange(8)[None].repeat(len(rows), 0), -scores[rows]), axis=1)[:, :depth]
        return np.take_along_axis(scores[rows], order, axis=1), order

    top = first_k(reversed_ties, np.arange(2), 8, 3)
    np.testing.assert_array_equal(top, [[0, 1, 2], [0, 1, 2]])
    assert depths == [4, 8]  # both lists end inside ties at depth 4; the whole database settles them


def test_blas_tiles_restores_faiss_settings() -> None:
    before = (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs)
    with blas_tiles(70, 1_000_000):
        assert faiss.cvar.distance_compute_blas_threshold == 0
        assert faiss.cvar.distance_compute_blas_query_bs * faiss.cvar.distance_compute_blas_database_bs * 4 <= 1 << 26
    assert (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs) == before


def revisited_among(rng: np.random.Generator, ranks: np.ndarray, depth: int) -> RevisitedGroundTruth:
    """Easy, hard and junk ids drawn from each query's first ``depth`` ranked images (a decent descriptor)."""
    lists = [rng.choice(row[:depth], size=12, replace=False) for row in ranks]
    return RevisitedGroundTruth(n_db=ranks.shape[1], easy=[ids[:3] for ids in lists],
                                hard=[ids[3:7] for ids in lists], junk=[ids[7:] for ids in lists])


def test_ranking_holding_gives_the_metrics_of_full_rankings() -> None:
    rng = np.random.default_rng(3)
    queries, db = unit_rows(rng, 12, 8), unit_rows(rng, 3000, 8)
    full = rank_by_inner_product(queries, db)
    gt = revisited_among(rng, full, 300)
    positives = [np.concatenate([e, h]) for e, h in zip(gt.easy, gt.hard, strict=True)]
    cut = ranking_holding(ExactSearch(db), queries, positives, start=16, growth=2)
    assert cut.shape == (12, 512)  # 16, 32, ..., 256 miss positives ranked up to 300
    assert all(np.isin(p, row).all() for p, row in zip(positives, cut, strict=True))
    assert not all(np.isin(p, row).all() for p, row in zip(positives, full[:, :256], strict=True))
    np.testing.assert_array_equal(cut, full[:, :512])
    exact, truncated = revisited_scores(full, gt.easy, gt.hard, gt.junk, 3000), revisited_scores(
        cut, gt.easy, gt.hard, gt.junk, 3000)
    for setting in ("easy", "medium", "hard"):
        assert exact[setting].to_dict() == truncated[setting].to_dict()


def test_the_evaluator_scores_as_full_rankings_do() -> None:
    rng = np.random.default_rng(4)
    queries, db = unit_rows(rng, 10, 8), unit_rows(rng, 2000, 8)
    full = rank_by_inner_product(queries, db)
    revisited = revisited_among(rng, full, 2000)  # positives anywhere: the evaluator may need full rankings
    metrics, per_query = _score(queries, ExactSearch(db), revisited)
    reference = revisited_scores(full, revisited.easy, revisited.hard, revisited.junk, 2000)
    assert metrics["map_hard"] == reference["hard"].map and per_query["ap_medium"] == reference["medium"].ap_list()
    oxford = OxfordGroundTruth(n_db=2000, positives=revisited.easy, junk=revisited.junk)
    metrics, _ = _score(queries, ExactSearch(db), oxford)
    assert metrics["map"] == oxford_scores(full, oxford.positives, oxford.junk, 2000).map
    places = PlaceGroundTruth(utm_db=rng.uniform(0, 100, (2000, 2)), utm_queries=rng.uniform(0, 100, (10, 2)))
    metrics, per_query = _score(queries, ExactSearch(db), places)
    scores = recall_at_n(full[:, :20], places.utm_queries, places.utm_db, 25.0, (1, 5, 10, 20))
    assert metrics == {f"recall@{n}": scores.recall(n) for n in (1, 5, 10, 20)}
    assert per_query["first_hit"] == scores.first_hit_list()
