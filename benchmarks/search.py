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
