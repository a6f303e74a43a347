"""Wall time per stage of a run (listing, hashing, reading, model, cache writes, search, ...), recorded only
while a caller asks for it (the scale benchmark, :mod:`benchmarks.speed.scale`); elsewhere :func:`stage` costs a
context-variable lookup.

Stages may repeat (a reading stage per batch): their seconds and calls add up. After each stage the record
keeps the process's peak resident memory so far, so the stage that raised it shows.
"""
from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageTimes:
    """Per stage name: seconds (summed), calls, and the peak RSS in bytes when it last ended."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1
        self.peak_rss[name] = peak_rss_bytes()

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {"seconds": round(s, 4), "calls": self.calls[name], "peak_rss_bytes": self.peak_rss[name]}
                for name, s in self.seconds.items()}


_current: ContextVar[StageTimes | None] = ContextVar("stage_times", default=None)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def recording() -> Iterator[StageTimes]:
    """Record the stages run inside the block."""
    times = StageTimes()
    token = _current.set(times)
    try:
        yield times
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` when a :func:`recording` is active."""
    times = _current.get()
    if times is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        times.add(name, time.perf_counter() - start)
