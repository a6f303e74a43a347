"""Exact search by inner product, and the interface compressed search (:mod:`benchmarks.evaluation.compression`) shares.

The order: each query's database ids by decreasing score, ties by database index (a stable sort of the
negated scores). Every function here returns a prefix of that order:

- :func:`rank_by_inner_product`: full rankings in numpy, query chunk by query chunk.
- :func:`top_k_by_inner_product` / :class:`ExactSearch`: the first k through faiss (BLAS tiles sized for the
  problem, the database in blocks whose results are merged), in memory bounded by the tile and block sizes;
  or, for many long queries on a CPU with native bfloat16, through
  :class:`~benchmarks.evaluation.bf16_filter.BFloat16Filter`
  (a bfloat16 product, a proven bound and float32 rescoring: the same top-k; at Pitts250k scale 22.6 s
  against 29.4 s in float32 on 2 cores).
- :func:`ranking_holding`: a ranking cut at a depth that holds each query's positives, so that metrics needing
  every positive's rank (mAP) are exact on a 1M-image database without full rankings.

faiss returns tied scores in no particular order, so :func:`first_k` accepts a top-k list only once every
item tied with its k-th score is inside it, then orders it by (score, index). Scores are float32 as
computed; "tied" means equal float32 values.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

if TYPE_CHECKING:
    from benchmarks.evaluation.bf16_filter import BFloat16Filter

Scorer = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

TILE_BYTES = 1 << 26  # faiss's query x database score tile (64 MiB); bigger tiles gave no speed here
MAX_QUERY_TILE = 4096  # faiss's default
BF16_MIN_QUERIES = 256  # fewer: converting the database to bfloat16 costs more than the product saves
BF16_MIN_DIM = 1024  # shorter: finding the k-th score and the candidates costs more than the product saves


class Search(Protocol):
    """A database ready to be searched: ``top_k(queries (n_q, D), k) -> (n_q, min(k, n_db))`` int64 ids."""

    @property
    def n_db(self) -> int: ...

    def top_k(self, queries: np.ndarray, k: int) -> np.ndarray: ...


def rank_by_inner_product(queries: np.ndarray, db: np.ndarray, chunk_bytes: int = 1 << 28) -> np.ndarray:
    """(n_q, D) x (n_db, D) -> (n_q, n_db) int64 database ids, highest similarity first.

    Ties are broken by database index (a stable sort of the negated similarities). Queries are processed in
    chunks so that one chunk's similarity matrix stays under ``chunk_bytes``.
    """
    n_db = db.shape[0]
    per_chunk = max(1, chunk_bytes // max(1, 4 * n_db))
    ranks = np.empty((queries.shape[0], n_db), dtype=np.int64)
    for start in range(0, queries.shape[0], per_chunk):
        similarity = queries[start:start + per_chunk] @ db.T
        ranks[start:start + per_chunk] = np.argsort(-similarity, axis=1, kind="stable")
    return ranks


def first_k(best: Scorer, queries: np.ndarray, n_db: int, k: int) -> np.ndarray:
    """(n_q, min(k, n_db)) ids: the first k of each query's order, ties by database index.

    ``best(queries, depth) -> (scores (n, depth) float32, best first; ids (n, depth))`` is any exact top-depth
    search that may return ties in any order. A list settles a query once it ends below its k-th score (so
    every item tied with the k-th is in it) or holds the whole database; the others are searched again 4x
    deeper.
    """
    k = min(k, n_db)
    top = np.empty((queries.shape[0], k), dtype=np.int64)
    if k == 0 or queries.shape[0] == 0:
        return top
    pending, depth = np.arange(queries.shape[0]), min(n_db, k + 1)
    while pending.size:
        scores, ids = best(queries[pending], depth)
        settled = np.full(pending.size, depth == n_db) | (scores[:, depth - 1] < scores[:, k - 1])
        order = np.lexsort((ids[settled], -scores[settled]), axis=1)[:, :k]
        top[pending[settled]] = np.take_along_axis(ids[settled], order, axis=1)
        pending, depth = pending[~settled], min(n_db, 4 * depth)
    return top


@contextmanager
def blas_tiles(n_queries: int, n_db: int) -> Iterator[None]:
    """faiss's exhaustive search (and k-means) through BLAS in tiles of at most ``TILE_BYTES``, at every size.

    faiss's defaults score fewer than 128000 / D queries one by one without BLAS and tile the database by
    1024 rows. On 2 cores, 70 queries x 200k x 512-D took 0.5 s with these tiles against 1.8 s, and PQ's
    k-means of 20k 4-D points into 256 centroids 0.16 s against 2 s. The settings are process-wide: they are
    restored on exit (not thread-safe).
    """
    cvar = faiss.cvar
    saved = (cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_query_bs,
             cvar.distance_compute_blas_database_bs)
    query_tile = max(1, min(n_queries, MAX_QUERY_TILE))
    cvar.distance_compute_blas_threshold = 0
    cvar.distance_compute_blas_query_bs = query_tile
    cvar.distance_compute_blas_database_bs = max(1, min(n_db, TILE_BYTES // (4 * query_tile)))
    try:
        yield
    finally:
        (cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_query_bs,
         cvar.distance_compute_blas_database_bs) = saved


class ExactSearch:
    """Exact inner-product search of ``db`` (n_db, D) in float32.

    The database is searched in blocks of at most ``block_bytes`` of float32 (views when ``db`` is float32
    already, converted block by block otherwise) whose top lists are merged, so memory stays bounded by a
    block, faiss's score tile and the (n_q, k) results. Lists deeper than a quarter of the database are cut
    from full numpy rankings (:func:`rank_by_inner_product`), faster there than heaps.

    ``bfloat16``: search through :class:`~benchmarks.evaluation.bf16_filter.BFloat16Filter` (True), never (False), or
    (None) when it pays: a float32 database, at least :data:`BF16_MIN_QUERIES` queries of at least
    :data:`BF16_MIN_DIM` dimensions, a CPU with native bfloat16 and a library that accumulates in float32.
    The filter keeps a bfloat16 copy of the database once built.
    """

    def __init__(self, db: np.ndarray, block_bytes: int = 1 << 30, bfloat16: bool | None = None) -> None:
        self.db = db
        self.block_rows = max(1, block_bytes // max(1, 4 * db.shape[1]))
        self.bfloat16 = bfloat16
        self._filter: BFloat16Filter | None = None

    @property
    def n_db(self) -> int:
        return int(self.db.shape[0])

    def top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        if 4 * k >= self.n_db:
            return _full_rankings_cut(queries, self.db, k)
        if self.uses_bfloat16(queries.shape[0]):
            return self._bfloat16_filter().top_k(queries, k)
        return first_k(self._best, np.ascontiguousarray(queries, dtype=np.float32), self.n_db, k)

    def uses_bfloat16(self, n_queries: int) -> bool:
        """Whether ``n_queries`` queries are searched through the bfloat16 filter."""
        if self.bfloat16 is not None:
            return self.bfloat16
        dim = self.db.shape[1]
        if n_queries < BF16_MIN_QUERIES or dim < BF16_MIN_DIM or self.db.dtype != np.float32:
            return False
        from benchmarks.evaluation.bf16_filter import native_bfloat16, products_within_bound  # torch, only when needed

        return native_bfloat16() and products_within_bound(dim)

    def _bfloat16_filter(self) -> BFloat16Filter:
        if self._filter is None:
            from benchmarks.evaluation.bf16_filter import BFloat16Filter

            self._filter = BFloat16Filter(self.db)
        return self._filter

    def _best(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        blocks = range(0, self.n_db, self.block_rows)
        heap = faiss.ResultHeap(queries.shape[0], depth, keep_max=True) if len(blocks) > 1 else None
        with blas_tiles(queries.shape[0], min(self.n_db, self.block_rows)):
            for start in blocks:
                block = np.ascontiguousarray(self.db[start:start + self.block_rows], dtype=np.float32)
                scores, ids = faiss.knn(queries, block, min(depth, block.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)
                if heap is None:
                    return scores, ids
                heap.add_result(scores, ids + start)
        assert heap is not None
        heap.finalize()
        return heap.D, heap.I


def _full_rankings_cut(queries: np.ndarray, db: np.ndarray, k: int, chunk_bytes: int = 1 << 28) -> np.ndarray:
    """The first k of :func:`rank_by_inner_product`'s rankings, one query chunk at a time."""
    per_chunk = max(1, chunk_bytes // max(1, 4 * db.shape[0]))
    parts = [rank_by_inner_product(queries[start:start + per_chunk], db, chunk_bytes)[:, :k]
             for start in range(0, queries.shape[0], per_chunk)]
    return np.concatenate(parts) if parts else np.empty((0, min(k, db.shape[0])), dtype=np.int64)


def top_k_by_inner_product(queries: np.ndarray, db: np.ndarray, k: int, chunk_bytes: int = 1 << 30) -> np.ndarray:
    """(n_q, D) x (n_db, D) -> (n_q, min(k, n_db)) database ids of the k highest similarities, best first.

    The same order as :func:`rank_by_inner_product` cut at k (ties by database index), computed in float32
    by :class:`ExactSearch` with database blocks of at most ``chunk_bytes``.
    """
    return ExactSearch(db, block_bytes=chunk_bytes).top_k(queries, k)


def ranking_holding(search: Search, queries: np.ndarray, required: Sequence[np.ndarray],
                    start: int = 1024, growth: int = 8) -> np.ndarray:
    """(n_q, depth) ids: every query's order cut at one depth that holds all of its ``required`` ids.

    ``required[q]`` are database ids (a query's positives). Metrics that need each positive's rank (AP, and
    mP@k through the last positive's rank) are then the same as on full rankings: whatever is ranked after
    the last positive changes neither. The depth starts at ``start`` and grows ``growth``-fold until every
    query's ids are inside, up to the whole database.
    """
    depth = min(search.n_db, start)
    while True:
        top = search.top_k(queries, depth)
        if depth == search.n_db or _holds(top, required, search.n_db):
            return top
        depth = min(search.n_db, growth * depth)


def _holds(top: np.ndarray, required: Sequence[np.ndarray], n_db: int) -> bool:
    listed = np.zeros(n_db, dtype=bool)
    for row, ids in zip(top, required, strict=True):
        listed[row] = True
        if not listed[ids].all():
            return False
        listed[row] = False
    return True
