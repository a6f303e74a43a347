"""sha256 of file contents, remembered in a small memo so that a second run reads no image twice.

The descriptor cache is keyed by the contents of the images, not their sizes: a picture replaced by another
of the same size must not reuse stale descriptors. Hashing a million images costs a read of each (the first
run reads them all anyway to extract); the memo (``<data root>/cache/file-sha256.sqlite``) remembers each
digest with the file's size, mtime, ctime, inode and device, and a file whose stat differs is hashed again.
Any write through the file system changes mtime and ctime (``touch -r`` sets mtime but not ctime), so a
replaced or edited file is always re-read; what is not seen is a change below the file system (bits rotting
on the disk, a raw write to the block device), which leaves every stat field as it was.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

MISSING = "missing"
_SCHEMA = "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, stat TEXT NOT NULL, sha256 TEXT NOT NULL)"
BLOCK = 8192  # paths per block: bounded memory, and few sqlite transactions
_THREADS = 4  # hashlib releases the GIL on large buffers: a few threads overlap reads with hashing


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """The sha256 of the file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_line(path: Path) -> str | None:
    """What identifies a version of the file (None when it does not exist or cannot be stat'ed)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def _open_memo(memo: Path | None) -> sqlite3.Connection | None:
    if memo is None:
        return None
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(memo, timeout=600)
        connection.execute(_SCHEMA)
        return connection
    except (OSError, sqlite3.Error) as error:  # a read-only data root: hash everything, remember nothing
        log.info("not remembering file digests in %s (%s)", memo, error)
        return None


def _digest_or_missing(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:  # unreadable: extraction names it, or skips it under --on-bad-image skip
        return MISSING


def file_digests(paths: Sequence[Path], memo: Path | None, block: int = BLOCK) -> Iterator[str]:
    """The sha256 of each file's contents (``"missing"`` for a file that cannot be read), in order; digests
    of files whose stat is unchanged since they were last hashed come from the sqlite ``memo``. Paths go a
    block of ``block`` at a time, so memory stays bounded by a block whatever the number of files (a million
    images: no list of a million names, stats and digests held at once)."""
    connection = _open_memo(memo)
    try:
        with ThreadPoolExecutor(_THREADS) as pool:
            for start in range(0, len(paths), block):
                yield from _block_digests(paths[start:start + block], connection, memo, pool)
    finally:
        if connection is not None:
            connection.close()


def _block_digests(paths: Sequence[Path], connection: sqlite3.Connection | None, memo: Path | None,
                   pool: ThreadPoolExecutor) -> list[str]:
    names = [os.path.abspath(p) for p in paths]
    stats = [_stat_line(p) for p in paths]
    known: dict[str, tuple[str, str]] = {}
    if connection is not None:
        with connection:
            for start in range(0, len(names), 500):  # sqlite's limit on bound parameters
                part = names[start:start + 500]
                query = f"SELECT path, stat, sha256 FROM digests WHERE path IN ({','.join('?' * len(part))})"
                known.update((name, (stat, sha)) for name, stat, sha in connection.execute(query, part))
    todo = [i for i, (name, stat) in enumerate(zip(names, stats, strict=True))
            if stat is not None and known.get(name, ("", ""))[0] != stat]
    fresh = dict(zip(todo, pool.map(_digest_or_missing, [paths[i] for i in todo]), strict=True))
    if connection is not None and todo:
        try:
            with connection:
                connection.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)",
                                       [(names[i], stats[i], fresh[i]) for i in todo if fresh[i] != MISSING])
        except sqlite3.Error as error:
            log.info("could not remember file digests in %s (%s)", memo, error)
    return [fresh[i] if i in fresh else known[name][1] if stat is not None else MISSING
            for i, (name, stat) in enumerate(zip(names, stats, strict=True))]
