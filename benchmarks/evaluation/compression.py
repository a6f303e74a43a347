"""Compact signatures: the leading d dimensions, product quantisation (PQ) with asymmetric distance search.

A spec names them: ``top256`` (the leading 256 dimensions), ``pq32`` (32 sub-vectors of 8 bits: 32 bytes per
image), ``top512+pq64`` (cut, then quantised). Any method's descriptors can be compressed; the evaluator
applies a spec after extraction and records it with the bytes per image (``EvaluateOptions.compression``).

- top-d keeps the leading d dimensions of database and queries and L2-normalises them again. Leading
  dimensions carry the most variance once descriptors are PCA-whitened (NetVLAD, MSCFP and REMAP whiten), so
  this is whitening to d dimensions followed by L2, as NetVLAD reports its lower-dimensional results; the
  re-normalisation keeps the inner product a cosine. 4 d bytes per image (float32).
- PQ (Jegou et al., TPAMI 2011) cuts each database descriptor into m sub-vectors and stores the index of the
  nearest of 256 k-means centroids of each (faiss ``IndexPQ``): m bytes per image. Codebooks are trained on
  the database descriptors themselves unless a training set is given (REMAP trains on a separate set; the
  evaluator uses the database, recorded as ``trained_on``). Queries stay uncompressed and are compared with
  the decoded database by squared Euclidean distance through per-query lookup tables (asymmetric distance
  computation, ADC), smallest first; for unit-norm descriptors that is the inner-product order the exact
  search uses. With fewer than 256 training vectors each sub-space's codebook is the training sub-vectors
  themselves (k-means' optimum, no error), repeated up to 256 entries.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

from benchmarks.core.ids import COMPRESSION_PATTERN
from benchmarks.evaluation.search import ExactSearch, Search, blas_tiles, first_k

log = logging.getLogger(__name__)

PQ_BITS = 8
PQ_CENTROIDS = 1 << PQ_BITS


@dataclass(frozen=True)
class Compression:
    """Keep the leading ``top_d`` dimensions (None: all), then product-quantise into ``pq_m`` bytes (None: no PQ)."""

    top_d: int | None = None
    pq_m: int | None = None

    @classmethod
    def parse(cls, text: str) -> Compression:
        """``top256``, ``pq32`` or ``top512+pq64``; a ValueError says what is accepted."""
        match = COMPRESSION_PATTERN.match(text)
        if match is None:
            raise ValueError(f"compression {text!r} is not topD, pqM or topD+pqM (top256, pq32, top512+pq64)")
        top_d, pq_m = match.group("top_d"), match.group("pq_m")
        return cls(top_d=int(top_d) if top_d else None, pq_m=int(pq_m) if pq_m else None)

    def __str__(self) -> str:
        return "+".join(part for part in (self.top_d and f"top{self.top_d}", self.pq_m and f"pq{self.pq_m}") if part)

    def output_dim(self, dim: int) -> int:
        """The dimension searched, after the cut; a ValueError where the spec does not fit ``dim``."""
        if self.top_d is not None and self.top_d > dim:
            raise ValueError(f"{self}: cannot keep {self.top_d} of {dim} dimensions")
        kept = dim if self.top_d is None else self.top_d
        if self.pq_m is not None and kept % self.pq_m:
            raise ValueError(f"{self}: {kept} dimensions do not split into {self.pq_m} equal sub-vectors")
        return kept

    def bytes_per_image(self, dim: int) -> int:
        """Stored bytes of one database signature: m with PQ, 4 x the dimensions kept (float32) without."""
        return self.pq_m if self.pq_m is not None else 4 * self.output_dim(dim)

    def describe(self, dim: int, trained_on: str = "database") -> dict[str, object]:
        """What a result records: ``{"spec", "bytes_per_image", "dim"[, "pq_trained_on"]}``."""
        record: dict[str, object] = {"spec": str(self), "bytes_per_image": self.bytes_per_image(dim),
                                     "dim": self.output_dim(dim)}
        if self.pq_m is not None:
            record["pq_trained_on"] = trained_on
        return record


def leading_dimensions(x: np.ndarray, d: int) -> np.ndarray:
    """(n, D) -> (n, d) float32: the first d columns, each row L2-normalised again (zero rows stay zero)."""
    cut = np.ascontiguousarray(x[:, :d], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.where(norms > 0, norms, 1)


def train_pq(train: np.ndarray, m: int) -> faiss.IndexPQ:
    """An empty ``IndexPQ`` with m sub-quantisers of 256 centroids each, trained on ``train`` (n, D)."""
    train = np.ascontiguousarray(train, dtype=np.float32)
    index = faiss.IndexPQ(train.shape[1], m, PQ_BITS)
    if train.shape[0] >= PQ_CENTROIDS:
        with blas_tiles(train.shape[0], PQ_CENTROIDS):  # k-means assigns training vectors to 256 centroids
            index.train(train)
        return index
    log.warning("PQ: %d training vectors, fewer than %d centroids: the codebooks are the training sub-vectors",
                train.shape[0], PQ_CENTROIDS)
    sub = train.reshape(train.shape[0], m, -1).transpose(1, 0, 2)           # (m, n, D / m)
    centroids = np.stack([np.resize(s, (PQ_CENTROIDS, s.shape[1])) for s in sub])  # (m, 256, D / m), rows cycled
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    return index


class PQSearch:
    """ADC search of a trained, filled ``IndexPQ``: ids by increasing squared distance, ties by index."""

    def __init__(self, index: faiss.IndexPQ) -> None:
        self.index = index

    @property
    def n_db(self) -> int:
        return int(self.index.ntotal)

    def top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        return first_k(self._best, np.ascontiguousarray(queries, dtype=np.float32), self.n_db, k)

    def _best(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        distances, ids = self.index.search(queries, depth)
        return -distances, ids  # best first as the highest score, as first_k expects


class _CutQueries:
    """A search over signatures cut to their leading dimensions: queries are cut the same way first."""

    def __init__(self, inner: Search, d: int) -> None:
        self.inner, self.d = inner, d

    @property
    def n_db(self) -> int:
        return self.inner.n_db

    def top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.inner.top_k(leading_dimensions(queries, self.d), k)


def prepare_search(db: np.ndarray, compression: Compression | None = None, train: np.ndarray | None = None) -> Search:
    """A :class:`~benchmarks.evaluation.search.Search` over ``db`` (n_db, D), compressed as ``compression`` says.

    ``train`` (n, D): PQ's training set (default: the database). None: exact search of ``db`` as it is.
    """
    if compression is None:
        return ExactSearch(db)
    dim = compression.output_dim(db.shape[1])
    if compression.top_d is not None:
        db = leading_dimensions(db, dim)
        train = None if train is None else leading_dimensions(train, dim)
    inner: Search = ExactSearch(db)
    if compression.pq_m is not None:
        index = train_pq(db if train is None else train, compression.pq_m)
        index.add(np.ascontiguousarray(db, dtype=np.float32))
        inner = PQSearch(index)
    return inner if compression.top_d is None else _CutQueries(inner, dim)
