"""Acquiring a dataset's declared files: downloads in parallel, lock file of first-seen checksums, extraction.

For each :class:`FileSpec` with URLs: fetch it (mirrors first: ``<prefix>/<dataset>/<file name>``, the data
root's own layout, so a lab can serve its data root as a mirror), verify it against the published sha256 or,
where none is published, against the one recorded in ``checksums.lock.json`` by the first verified download,
unpack archives, and leave a stamp in ``.acquired/`` so a later run skips it. Files are independent: an
interrupted run keeps every finished file and every partial one, and the next run continues from there.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from benchmarks.archives import extract
from benchmarks.atomic import atomic_write_text
from benchmarks.download import Retry, fetch
from benchmarks.errors import InputError
from datasets.base import FileSpec

log = logging.getLogger(__name__)

LOCK_NAME = "checksums.lock.json"
STAMPS = ".acquired"


@dataclass(frozen=True)
class AcquireOptions:
    """``data download`` options: mirrors tried first (or only: machines without internet), parallel
    downloads, archives kept after extraction, retry policy, where images given out on request already
    are (``--images``), which of a dataset's numbered archives to fetch (``--archives``; None: all), and
    whether a file without a checksum may come over plain http (its sha256 is then locked)."""

    mirrors: tuple[str, ...] = ()
    mirror_only: bool = False
    jobs: int = 4
    keep_archives: bool = False
    retry: Retry = Retry()
    images: Path | None = None
    archives: tuple[int, ...] | None = None
    allow_insecure_http: bool = False


def parse_archive_ranges(text: str) -> tuple[int, ...]:
    """``"0-9,42"`` -> (0, 1, ..., 9, 42): sorted, each index once."""
    indices: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if match is None:
            raise InputError(f"--archives takes indices and ranges such as 0-9,42; got {part.strip()!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise InputError(f"--archives: empty range {part.strip()!r} (write it low-high)")
        indices.update(range(first, last + 1))
    return tuple(sorted(indices))


class ChecksumLock:
    """``checksums.lock.json``: sha256 and size of files without a published checksum, as first verified."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._lock = threading.Lock()
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        except ValueError:
            raise InputError("unreadable lock file; restore it from a backup or delete it to record the "
                             "checksums afresh", self.path) from None

    def sha256(self, name: str) -> str | None:
        entry = self.entries.get(name)
        return None if entry is None else entry["sha256"]

    def record(self, name: str, sha256: str, size: int, url: str | None) -> None:
        with self._lock:
            self.entries[name] = {"sha256": sha256, "size": size, "url": url,
                                  "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            atomic_write_text(self.path, json.dumps(self.entries, indent=2, sort_keys=True) + "\n")


def stamp_path(folder: Path, spec: FileSpec) -> Path:
    return folder / STAMPS / f"{spec.name.replace('/', '__')}.json"


def is_acquired(folder: Path, spec: FileSpec) -> bool:
    """True when ``spec`` was fetched, verified and (for archives) unpacked by an earlier run, or, for files
    given out on request, when it is in place."""
    if spec.manual:
        return (folder / spec.name).exists()
    return stamp_path(folder, spec).exists() and (spec.extract_to is not None or (folder / spec.name).exists())


def _acquire_one(folder: Path, dataset: str, spec: FileSpec, options: AcquireOptions, lock: ChecksumLock,
                 position: int) -> None:
    if is_acquired(folder, spec):
        log.debug("%s/%s: already acquired", dataset, spec.name)
        return
    published = spec.sha256
    expected = published or lock.sha256(spec.name)
    urls = [f"{m.rstrip('/')}/{dataset}/{spec.name}" for m in options.mirrors]
    urls += [] if options.mirror_only else list(spec.urls)
    dest = folder / spec.name
    try:
        got = fetch(urls, dest, sha256=expected, size=spec.size, md5=spec.md5, retry=options.retry,
                    label=f"{dataset}/{spec.name}", position=position,
                    allow_insecure_http=options.allow_insecure_http)
    except InputError as error:
        if published is None and expected is not None:
            raise InputError(f"{error.message}\n  The expected sha256 is the one recorded by the first download in "
                             f"{lock.path}; if the file legitimately changed, delete its entry there", dest) from None
        raise
    files = None
    if spec.extract_to is not None:
        try:
            files = extract(dest, folder / spec.extract_to, flatten=spec.flatten)
        except InputError:
            dest.unlink(missing_ok=True)  # a broken archive must not be taken as verified next time
            raise
    if expected is None and spec.md5 is None:
        lock.record(spec.name, got.sha256, got.size, got.url)
    atomic_write_text(stamp_path(folder, spec), json.dumps(
        {"sha256": got.sha256, "size": got.size, "url": got.url, "files": files}, indent=2) + "\n")
    if spec.extract_to is not None and not options.keep_archives:
        dest.unlink()


def acquire_files(folder: Path, dataset: str, files: tuple[FileSpec, ...], options: AcquireOptions) -> None:
    """Fetch every downloadable file of ``dataset`` into ``folder``, ``options.jobs`` at a time.

    Every file is attempted even when others fail; one :class:`InputError` then lists the failures.
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = ChecksumLock(folder)
    todo = [spec for spec in files if spec.urls]
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        futures = {pool.submit(_acquire_one, folder, dataset, spec, options, lock, i % max(1, options.jobs)): spec
                   for i, spec in enumerate(todo)}
        for future in as_completed(futures):
            try:
                future.result()
            except InputError as error:
                failures.append(str(error))
    if failures:
        done = len(todo) - len(failures)
        if created and not any(path.is_file() for path in folder.rglob("*")):
            shutil.rmtree(folder)  # nothing arrived: leave no empty folder that looks like a started download
        kept = f" ({done} done and kept)" if done else ""
        raise InputError(f"{len(failures)} of {len(todo)} files failed{kept}:\n" + "\n".join(failures), folder)
