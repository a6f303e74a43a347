"""How long exact top-k search takes, and how much memory, at the largest published scales.

- ``revisited_1m``: 70 queries x 1,000,000 database descriptors x 512-D (ROxford5k or RParis6k + 1M
  distractors with a 512-D global descriptor such as DOLG's), top-100.
- ``pitts250k``: 8,280 queries x 83,952 x 4096-D (Pitts250k-test with NetVLAD's whitened descriptor), top-100.

Descriptors are random unit vectors (the cost does not depend on them). Memory is the process's resident
peak from the moment the descriptors exist (Linux's VmHWM, reset then; elsewhere getrusage's high-water mark,
which never goes down): ``data_gib`` is the descriptors themselves, ``peak_gib`` everything, the search
included.
``path`` says how :class:`~benchmarks.evaluation.search.ExactSearch` searched (``bfloat16 filter`` or ``float32``);
``--float32`` adds the float32 path's time where the filter was taken.
``--compress SPEC`` adds building the compressed database (PQ training and encoding) and searching it.
"""
from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.evaluation.compression import Compression, prepare_search
from benchmarks.evaluation.search import ExactSearch
from benchmarks.speed import best_times, machine


@dataclass(frozen=True)
class SearchCase:
    n_queries: int
    n_db: int
    dim: int


CASES = {"revisited_1m": SearchCase(70, 1_000_000, 512), "pitts250k": SearchCase(8280, 83_952, 4096)}


def unit_vectors(n: int, dim: int, seed: int, block_bytes: int = 1 << 26) -> np.ndarray:
    """(n, dim) float32 random unit vectors, generated in blocks of ``block_bytes`` (no copy of the whole)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    block = max(1, block_bytes // (4 * dim))
    for start in range(0, n, block):
        part = out[start:start + block]
        rng.standard_normal(part.shape, dtype=np.float32, out=part)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return out


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # Linux: VmHWM starts again from the current RSS
        Path("/proc/self/clear_refs").write_text("5")


def _peak_gib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def time_case(case: SearchCase, k: int = 100, repeat: int = 1, compression: Compression | None = None,
              faiss_defaults: bool = False, float32: bool = False) -> dict[str, Any]:
    """Best-of-``repeat`` wall and CPU seconds of exact top-k (and of the compressed search), with memory."""
    db, queries = unit_vectors(case.n_db, case.dim, seed=0), unit_vectors(case.n_queries, case.dim, seed=1)
    _reset_peak()
    search = ExactSearch(db)
    figures: dict[str, Any] = {"n_queries": case.n_queries, "n_db": case.n_db, "dim": case.dim, "k": k,
                               "gflop": round(2 * case.n_queries * case.n_db * case.dim / 1e9, 1),
                               **_seconds(repeat, lambda: search.top_k(queries, k)),
                               "data_gib": round((db.nbytes + queries.nbytes) / 2**30, 3),
                               "peak_gib": round(_peak_gib(), 3),
                               "path": "bfloat16 filter" if search.uses_bfloat16(case.n_queries) else "float32"}
    if float32 and figures["path"] != "float32":
        figures["float32"] = _seconds(repeat, lambda: ExactSearch(db, bfloat16=False).top_k(queries, k))
    if faiss_defaults:  # the same search through faiss's default settings, for comparison
        figures["faiss_defaults"] = _seconds(repeat, lambda: faiss.knn(queries, db, k,
                                                                      metric=faiss.METRIC_INNER_PRODUCT))
    if compression is not None:
        start = time.perf_counter()
        compressed = prepare_search(db, compression)
        figures["compressed"] = {**compression.describe(case.dim),
                                 "build_seconds": round(time.perf_counter() - start, 3),
                                 **_seconds(repeat, lambda: compressed.top_k(queries, k)),
                                 "peak_gib": round(_peak_gib(), 3)}
    return figures


def _seconds(repeat: int, fn: Callable[[], object]) -> dict[str, float]:
    wall, cpu = best_times(repeat, fn)
    return {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3)}


def run(cases: dict[str, SearchCase] | None = None, k: int = 100, repeat: int = 1,
        compression: Compression | None = None, faiss_defaults: bool = False, float32: bool = False
        ) -> dict[str, Any]:
    """Figures of each case (default: :data:`CASES`), with the machine and versions."""
    environment = machine()  # before the cases: its load average is the other work on the machine
    figures = {name: time_case(case, k, repeat, compression, faiss_defaults, float32)
               for name, case in (cases or CASES).items()}
    return {"benchmark": "search", "cases": figures, "repeat": repeat,
            "faiss_threads": faiss.omp_get_max_threads(), "environment": environment}
