"""Exact search: rank database descriptors by inner product with each query."""
from __future__ import annotations

import numpy as np


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


def top_k_by_inner_product(queries: np.ndarray, db: np.ndarray, k: int, chunk_bytes: int = 1 << 28) -> np.ndarray:
    """(n_q, D) x (n_db, D) -> (n_q, min(k, n_db)) database ids of the k highest similarities, best first.

    The same order as :func:`rank_by_inner_product` cut at k (ties by database index), in memory bounded by
    ``chunk_bytes`` per query chunk.
    """
    n_db = db.shape[0]
    k = min(k, n_db)
    per_chunk = max(1, chunk_bytes // max(1, 4 * n_db))
    top = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], per_chunk):
        similarity = queries[start:start + per_chunk] @ db.T
        if k < n_db:  # keep every id tied with the k-th best, so that the stable sort below breaks ties by id
            kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1:k]
            similarity = np.where(similarity >= kth, similarity, -np.inf)
        top[start:start + per_chunk] = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return top
