"""Exact top-k by inner product through a bfloat16 product, a proven error bound and float32 rescoring.

CPUs with native bfloat16 dot products (AVX512-BF16, AMX) multiply bfloat16 matrices about 2.4x faster than
float32 ones (381 against 157 GFLOPS on the project's 2-core machine), and large exact searches are one big
product. :class:`BFloat16Filter` computes every score in bfloat16 and keeps, per query, only the database
items whose *true* score may reach the k-th best; it then rescores those in float32 and orders them by
(score, index) as :mod:`benchmarks.evaluation.search` does. Nothing is approximate: the bound below is a theorem, so the
result is the float32 top-k.

The bound. With ``q = q_h + q_l`` and ``x = x_h + x_l`` (``q_h``, ``x_h`` rounded to bfloat16; ``q_l``, ``x_l``
exact in float32), ``q.x = q_h.x_h + q_l.x + q_h.x_l``. The product of two bfloat16 numbers is exact in
float32, and the product accumulates in float32 before its output is rounded to bfloat16, so the computed
score ``P`` satisfies ``|P - q.x| <= uo |P| + E`` with ``uo = u / (1 - u)`` (``u = 2**-8``, bfloat16's unit
roundoff) and ``E = |q_l| max|x| + |q_h| max|x_l| + g |q_h| max|x_h|`` (``g = D 2**-24 / (1 - D 2**-24)``,
float32 accumulation of D terms; ``|x_h| <= (1 + u) |x|``). Float32 rescoring is within
``F = g |q| max|x|`` of ``q.x``. If ``P_k`` is the k-th largest P, k items have a true score of at least
``lo(P_k) = P_k - uo|P_k| - E``, so the k-th rescored score is at least ``lo(P_k) - F``; an item whose
``hi(P) = P + uo|P| + E`` is below ``lo(P_k) - 2F`` rescores strictly below it. Both ``lo`` and ``hi``
increase with P, so the kept items are those with P at or above one threshold per query, rounded down to
bfloat16.

That accumulation is in float32 is what the library promises (oneDNN's and ATen's bfloat16 GEMMs); it is
checked on each dimension before first use (:func:`products_within_bound`), and :func:`native_bfloat16`
says whether the CPU has the instructions that make this path worth taking.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

U = 2.0 ** -8  # bfloat16's unit roundoff (8 significant bits, round to nearest)
UO = U / (1 - U)  # |P - exact| <= UO |P| for a rounded P
TILE_BYTES = 1 << 27  # a query block's bfloat16 scores and their mask (128 MiB)


def accumulation_error(dim: int) -> float:
    """g: float32 accumulation of ``dim`` products errs by at most g times the sum of their magnitudes."""
    n = dim * 2.0 ** -24
    return n / (1 - n)


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 dot products (Linux's /proc/cpuinfo flags avx512_bf16 or amx_bf16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bfloat16_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` of bfloat16 matrices, as the filter computes it (a bfloat16 result)."""
    return a @ b.T


@functools.cache
def products_within_bound(dim: int, product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bfloat16_product,
                          rows: int = 256, columns: int = 2048) -> bool:
    """Whether ``product`` of ``dim``-long bfloat16 rows stays within the bound float32 accumulation gives.

    Rows of ones (sum ``dim``), one followed by ``2**-9`` (lost one by one when accumulating in bfloat16) and
    random bfloat16 values, against their float64 products; shapes like the filter's.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, dim)).astype(np.float32)
    b = rng.standard_normal((columns, dim)).astype(np.float32)
    a[0], b[0] = 1.0, 1.0
    a[1], b[1, 0], b[1, 1:] = 1.0, 1.0, 2.0 ** -9
    a_h, b_h = torch.from_numpy(a).to(torch.bfloat16), torch.from_numpy(b).to(torch.bfloat16)
    computed = product(a_h, b_h).double()
    exact = a_h.double() @ b_h.double().T
    bound = UO * computed.abs() + accumulation_error(dim) * (a_h.double().abs() @ b_h.double().abs().T)
    return bool(((computed - exact).abs() <= bound).all())


class BFloat16Filter:
    """Exact top-k inner-product search of ``db`` (n_db, D) float32 through a bfloat16 product.

    Holds ``db`` (not copied) and its bfloat16 copy (half its size). Queries go in blocks whose scores take
    at most :data:`TILE_BYTES`.
    """

    def __init__(self, db: np.ndarray, block_rows: int = 4096) -> None:
        with warnings.catch_warnings():  # a read-only memory map: torch warns, and nothing here writes to it
            warnings.simplefilter("ignore", UserWarning)
            self.db = torch.from_numpy(np.ascontiguousarray(db, dtype=np.float32))
        self.db_h = torch.empty(self.db.shape, dtype=torch.bfloat16)
        self.max_norm = self.max_norm_l = 0.0  # of x and x_l; |x_h| <= (1 + U) |x|
        for start in range(0, self.db.shape[0], block_rows):
            block = self.db[start:start + block_rows]
            rounded = self.db_h[start:start + block_rows].copy_(block).float()
            self.max_norm = max(self.max_norm, float(_norms(block).max()))
            self.max_norm_l = max(self.max_norm_l, float(_norms(block - rounded).max()))

    @property
    def n_db(self) -> int:
        return int(self.db.shape[0])

    def top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n_q, k) int64 ids, each query's k best by float32 score, ties by database index (k <= n_db)."""
        queries_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        top = np.empty((queries_t.shape[0], k), dtype=np.int64)
        per_block = max(1, TILE_BYTES // (3 * max(1, self.n_db)))
        for start in range(0, queries_t.shape[0], per_block):
            top[start:start + per_block] = self._block_top_k(queries_t[start:start + per_block], k)
        return top

    def _block_top_k(self, queries: torch.Tensor, k: int) -> np.ndarray:
        rounded = queries.to(torch.bfloat16)
        scores = bfloat16_product(rounded, self.db_h)  # (n, n_db), accumulated in float32
        db_ids, query_ids = (scores >= self._thresholds(queries, rounded, scores, k)[:, None]).T.nonzero(
            as_tuple=True)  # database-major, as the rescoring reads the database
        rescored = _rescore(self.db, queries, db_ids, query_ids)
        order = np.lexsort((db_ids.numpy(), -rescored, query_ids.numpy()))
        firsts = np.searchsorted(query_ids.numpy()[order], np.arange(queries.shape[0]))
        return db_ids.numpy()[order[firsts[:, None] + np.arange(k)]]

    def error_bounds(self, queries: torch.Tensor, rounded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, F) per query (float64): ``|P - q.x| <= UO |P| + E`` for every database x, ``|rescored - q.x| <= F``."""
        g = accumulation_error(queries.shape[1])
        norm, norm_l = _norms(queries), _norms(queries - rounded.float())
        norm_h = (1 + U) * norm
        e = norm_l * self.max_norm + norm_h * self.max_norm_l + g * norm_h * (1 + U) * self.max_norm
        e = e + queries.shape[1] * 2.0 ** -120 * (1 + norm) * (1 + self.max_norm)  # flushed subnormals
        return e, g * norm * self.max_norm

    def _thresholds(self, queries: torch.Tensor, rounded: torch.Tensor, scores: torch.Tensor,
                    k: int) -> torch.Tensor:
        """Per query, the bfloat16 threshold at or above which the score of every possible top-k item lies."""
        e, f = self.error_bounds(queries, rounded)
        p_k = scores.topk(k, dim=1, sorted=False).values.min(dim=1).values.double()
        target = p_k - UO * p_k.abs() - 2 * f - e  # hi(P) >= lo(P_k) - 2F  <=>  P + UO|P| >= target
        exact = torch.where(target >= 0, target / (1 + UO), target / (1 - UO))
        exact = exact - 2.0 ** -40 * (p_k.abs() + e + f)  # below this float64 arithmetic's own rounding
        rounded_threshold = exact.to(torch.bfloat16)
        down = torch.nextafter(rounded_threshold, torch.full_like(rounded_threshold, -torch.inf))
        return torch.where(rounded_threshold.double() > exact, down, rounded_threshold)


def _norms(rows: torch.Tensor) -> torch.Tensor:
    """float64 upper bounds of the rows' float32 L2 norms (enlarged by twice their accumulation error)."""
    return torch.linalg.vector_norm(rows, dim=1).double() * (1 + 2 * accumulation_error(rows.shape[1] + 2))


def _rescore(db: torch.Tensor, queries: torch.Tensor, db_ids: torch.Tensor, query_ids: torch.Tensor
             ) -> np.ndarray:
    """float32 ``db[db_ids[i]] . queries[query_ids[i]]`` for pairs sorted by database id (one sparse product)."""
    counts = torch.bincount(db_ids, minlength=db.shape[0])
    rows = torch.zeros(db.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=rows[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(rows, query_ids, torch.zeros(query_ids.numel()),
                                          size=(db.shape[0], queries.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, db, queries.T, beta=0.0).values().numpy()
