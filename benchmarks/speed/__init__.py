"""Speed and memory benchmarks: figures to record, not pass/fail tests (``python -m benchmarks speed``).

Every benchmark reports its figures with :func:`machine` (the hardware, its load and the versions) and times
with :func:`best_of` or :func:`best_times`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.core.provenance import environment


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The shortest wall time of ``repeat`` calls of ``fn``, in seconds."""
    return best_times(repeat, fn)[0]


def best_times(repeat: int, fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeat`` calls of ``fn``. CPU time adds up the process's
    threads: on a busy machine it moves less than wall time, which waits for the other work."""
    times = []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start, time.process_time() - start_cpu))
    return min(times)


def machine(device: str = "cpu") -> dict[str, object]:
    """:func:`benchmarks.core.provenance.environment` (the device by name) plus the CPU model, the CPUs this process
    may use, torch's threads, the memory and the load average when the figures were taken (other work on the
    machine slows them)."""
    import torch

    info: dict[str, object] = dict(environment(torch.cuda.get_device_name(device) if device.startswith("cuda")
                                               else device))
    info["torch_threads"] = torch.get_num_threads()
    info["cpu_model"] = _cpuinfo_field("model name") or "unknown"
    info["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS", "unset")
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        info["memory_gib"] = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    return info


def _cpuinfo_field(name: str) -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.partition(":")[2].strip() for line in lines if line.startswith(name)), None)
