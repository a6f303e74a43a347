"""Atomic file writes: a reader sees the old file or the complete new one, never a partial write; the file
gets the mode any new file gets (0644 under the usual umask 022).

A write that fails (disk full, folder not writable) removes its temporary file and raises one
:class:`InputError` naming the path and the cause; whatever was at the path before is left untouched.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from benchmarks.core.errors import InputError

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0o022)  # read once, at import (setting it is process-wide): new files get 0o666 less it
os.umask(_UMASK)
_ADVICE = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some of your quota",
           errno.EACCES: "make the folder writable or write elsewhere",
           errno.EPERM: "make the folder writable or write elsewhere", errno.EROFS: "write elsewhere"}


def write_failure(error: OSError, path: Path, what: str = "nothing was written") -> InputError:
    """One clear error for a failed write of ``path``: the cause, what was (not) left, and the fix."""
    advice = _ADVICE.get(error.errno or 0, "check the disk and the folder")
    return InputError(f"cannot write: {error.strerror or error}; {what} ({advice})", path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results, tables and checkpoints from others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_failure(error, path) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(path: str | Path) -> None:
    """Delete the temporary files that killed writers of ``path`` left; only while holding ``path``'s lock
    (:mod:`benchmarks.core.locks`), when no other writer can be at work."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text (UTF-8) version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))
