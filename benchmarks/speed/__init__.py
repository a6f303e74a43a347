"""Speed and memory benchmarks: figures to record, not pass/fail tests (``python -m benchmarks speed``).

Every benchmark reports its figures with :func:`machine` and times with :func:`best_of`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from benchmarks.provenance import environment


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The shortest wall time in seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine(device: str = "cpu") -> dict[str, str]:
    """Versions (python, numpy, torch, ...), platform, CPU count and torch threads, and the device by name."""
    import torch

    env = environment(torch.cuda.get_device_name(device) if device.startswith("cuda") else device)
    env.update({"cpu_count": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads())})
    return env
