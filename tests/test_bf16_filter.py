"""The bfloat16 filter gives float32's exact top-k: the same ids, ties by index, on data where float32 is exact
and on random unit vectors (up to float32's own rounding), and refuses a product that accumulates in bfloat16."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.evaluation.bf16_filter import (
    UO,
    BFloat16Filter,
    bfloat16_product,
    native_bfloat16,
    products_within_bound,
)
from benchmarks.evaluation.search import BF16_MIN_DIM, BF16_MIN_QUERIES, ExactSearch, rank_by_inner_product


def exact_integers(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Integers in [-511, 511]: 9 bits, not all bfloat16 (8 significant bits), while every float32 sum of 64
    of their products is exact (< 2**24), so any float32 computation gives the same, exact scores."""
    return rng.integers(-511, 512, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 10, 99])
def test_the_filter_is_the_reference_ranking_cut_at_k_with_ties_by_index(k: int) -> None:
    rng = np.random.default_rng(k)
    db, queries = exact_integers(rng, 400, 64), exact_integers(rng, 37, 64)
    db[200:260] = db[100:160]  # exact ties, in both orders of index
    db[10:20] = db[300:310]
    queries[:5] = db[[100, 10, 300, 0, 399]]
    assert (torch.from_numpy(db).bfloat16().float().numpy() != db).mean() > 0.2  # bfloat16 rounds those above 256
    top = BFloat16Filter(db).top_k(queries, k)
    assert top.dtype == np.int64 and top.shape == (37, k)
    np.testing.assert_array_equal(top, rank_by_inner_product(queries, db)[:, :k])


def test_the_filter_on_unit_vectors_differs_from_float32_only_at_float32_ties() -> None:
    rng = np.random.default_rng(0)
    db = rng.standard_normal((5000, 1024)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = rng.standard_normal((300, 1024)).astype(np.float32)
    top = ExactSearch(db, bfloat16=True).top_k(queries, 50)
    reference = ExactSearch(db, bfloat16=False).top_k(queries, 50)
    exact = queries.astype(np.float64) @ db.astype(np.float64).T
    same = (top == reference).all(axis=1)
    assert same.mean() > 0.95
    for q in np.flatnonzero(~same):  # near-ties that float32's rounding orders either way
        np.testing.assert_allclose(exact[q, top[q]], exact[q, reference[q]], atol=1e-6)
    assert (top[:, 0] == reference[:, 0]).all()


def test_the_bound_check_refuses_a_product_accumulated_in_bfloat16() -> None:
    def accumulated_in_bfloat16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], b.shape[0], dtype=torch.bfloat16)
        for i in range(a.shape[1]):
            total += a[:, i:i + 1] * b[:, i]
        return total

    assert products_within_bound(1024)
    assert products_within_bound(1024, bfloat16_product, rows=8, columns=16)
    assert not products_within_bound(1024, accumulated_in_bfloat16, rows=8, columns=16)


def test_exact_search_takes_the_filter_only_where_it_pays() -> None:
    big = np.zeros((10, BF16_MIN_DIM), dtype=np.float32)
    assert ExactSearch(big).uses_bfloat16(BF16_MIN_QUERIES) == native_bfloat16()
    assert not ExactSearch(big).uses_bfloat16(BF16_MIN_QUERIES - 1)
    assert not ExactSearch(big[:, :BF16_MIN_DIM - 1]).uses_bfloat16(10_000)
    assert not ExactSearch(big.astype(np.float16)).uses_bfloat16(10_000)
    assert ExactSearch(big[:, :8], bfloat16=True).uses_bfloat16(1)
    assert not ExactSearch(big, bfloat16=False).uses_bfloat16(10_000)


def test_exact_search_through_the_filter_keeps_its_bfloat16_copy() -> None:
    rng = np.random.default_rng(3)
    db, queries = exact_integers(rng, 300, 64), exact_integers(rng, 9, 64)
    search = ExactSearch(db, bfloat16=True)
    first = search.top_k(queries, 5)
    kept = search._filter
    np.testing.assert_array_equal(search.top_k(queries, 20)[:, :5], first)
    assert search._filter is kept


def test_the_error_bound_holds_and_is_nearly_reached_when_rounding_errors_align() -> None:
    """Every coordinate rounded down by almost bfloat16's half spacing, in queries and database alike: the
    bfloat16 score (exact in bfloat16 there) falls short of the exact one by nearly E; no score errs by more
    than UO|P| + E."""
    rng = np.random.default_rng(5)
    dim = 1024
    aligned = np.full((4, dim), 1 + 2.0 ** -8 - 2.0 ** -20, dtype=np.float32)  # rounds down to 1
    db = np.concatenate([aligned, rng.standard_normal((60, dim)).astype(np.float32)])
    queries = np.concatenate([aligned[:2], rng.standard_normal((30, dim)).astype(np.float32)])
    search = BFloat16Filter(db)
    q = torch.from_numpy(queries)
    rounded = q.to(torch.bfloat16)
    computed = bfloat16_product(rounded, search.db_h).double()
    exact = torch.from_numpy(queries.astype(np.float64) @ db.astype(np.float64).T)
    e, _ = search.error_bounds(q, rounded)
    error = (computed - exact).abs()
    assert (error <= UO * computed.abs() + e[:, None]).all()
    assert (computed[:2, :4] == 1024).all()  # the float32 sum itself: no output rounding, E alone bounds it
    assert (error[:2, :4] <= e[:2, None]).all() and (error[:2, :4] / e[:2, None]).min() > 0.95


def test_the_filter_keeps_an_item_bfloat16_ranks_below_the_kth_by_more_than_its_output_rounding() -> None:
    """Rounding errors aligned against A and for B: bfloat16 scores B 510 and A 504, three output steps apart,
    while A's exact score (507.95) beats B's (506.94). The output-rounding margin alone would cut at 506; the
    input-rounding term E keeps A."""
    up, down = 1 + 2.0 ** -8 + 2.0 ** -20, 1 + 2.0 ** -8 - 2.0 ** -20  # to 1 + 2**-7 and to 1 in bfloat16
    query = np.concatenate([np.full(512, up), np.full(512, down)]).astype(np.float32)[None]
    a = np.concatenate([np.zeros(520), np.full(504, down)])
    b = np.concatenate([np.full(503, up), np.zeros(521)])
    db = np.stack([b, a, 0.9 * a, 0.9 * b]).astype(np.float32)
    search = BFloat16Filter(db)
    np.testing.assert_array_equal(bfloat16_product(torch.from_numpy(query).bfloat16(), search.db_h)[0, :2].float(),
                                  [510.0, 504.0])
    np.testing.assert_array_equal(search.top_k(query, 1), [[1]])
    np.testing.assert_array_equal(search.top_k(query, 3), rank_by_inner_product(query, db)[:, :3])
