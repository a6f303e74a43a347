"""Inter-process locks: one writer at a time for a file that several runs may write (a download, a result,
a descriptor-cache chunk).

``exclusive(target)`` holds an ``fcntl.flock`` on ``<target>.lock``. The kernel drops the lock when its
holder dies (even by SIGKILL), so a killed run never leaves a stale lock behind; the lock file itself is
removed on release, and a process that locked a file another process has just removed locks again.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.core.errors import InputError

_POLL_S = 0.05


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def try_lock(path: Path) -> int | None:
    """A descriptor of ``path`` (created if needed) holding its exclusive flock, or None when another process
    holds it. Closing the descriptor releases the lock; so does the holder's death."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def wait_lock(path: Path) -> int:
    """As :func:`try_lock`, waiting for another holder to let go."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _open_locked(path: Path, wait_s: float | None) -> int:
    """A descriptor of ``path`` holding its flock; ``wait_s`` None: fail at once when it is held elsewhere."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    while True:
        fd = try_lock(path)
        if fd is None:
            if deadline is None or time.monotonic() >= deadline:
                raise BlockingIOError(f"{path} is locked by another process")
            time.sleep(_POLL_S)
            continue
        # The holder before us may have removed the file after unlocking it: then we locked an orphan.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def exclusive(target: Path, *, wait_s: float | None = None, doing: str = "writing") -> Iterator[None]:
    """Hold the lock of ``target`` for the block.

    ``wait_s``: seconds to wait for another holder (None: do not wait). Raises :class:`InputError` naming
    ``target`` when the lock stays held, or when the lock file cannot be created (a folder not writable).
    """
    path = lock_path(Path(target))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, wait_s)
    except BlockingIOError:
        waited = "" if wait_s is None else f" (waited {wait_s:g} s)"
        raise InputError(f"another process is {doing} this file{waited}; wait for it to finish or stop it",
                         target) from None
    except OSError as error:
        raise InputError(f"cannot create the lock file {path.name}: {error.strerror}; is the folder writable?",
                         target) from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
