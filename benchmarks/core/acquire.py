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

from benchmarks.core.archives import ArchiveWriteError, extract
from benchmarks.core.atomic import atomic_write_text
from benchmarks.core.download import Retry, fetch, sha256_of
from benchmarks.core.errors import InputError
from benchmarks.core.ids import MD5_PATTERN, SHA256_PATTERN

log = logging.getLogger(__name__)

LOCK_NAME = "checksums.lock.json"
STAMPS = ".acquired"


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, relative to the dataset's folder under the data root.

    ``urls`` are tried in order (after any ``--mirror``); ``sha256`` is None where no checksum is published
    (the first verified download then records one in the folder's lock file); ``md5``: the checksum where a
    dataset publishes only md5 (checked, no lock entry needed). ``extract_to``: unpack the
    archive into this sub-folder (``flatten``: files only, by base name), then delete it. ``manual`` replaces
    ``urls`` for files given out on request, and says where to ask.
    """

    name: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    extract_to: str | None = None
    flatten: bool = False
    manual: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        for path in (self.name, self.extract_to or "."):
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise ValueError(f"{self.name}: {path!r} must be a relative path inside the dataset folder")
        if self.sha256 is not None and not SHA256_PATTERN.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.md5 is not None and not MD5_PATTERN.match(self.md5):
            raise ValueError(f"{self.name}: md5 must be 32 lowercase hex digits, got {self.md5!r}")
        if not self.urls and not self.manual:
            raise ValueError(f"{self.name}: give download urls or manual acquisition instructions")
        if self.flatten and self.extract_to is None:
            raise ValueError(f"{self.name}: flatten applies to archives (set extract_to)")


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
            entries = json.loads(self.path.read_text()) if self.path.exists() else {}
        except ValueError:
            entries = None
        if not (isinstance(entries, dict) and all(
                isinstance(e, dict) and SHA256_PATTERN.match(str(e.get("sha256"))) for e in entries.values())):
            raise InputError("unreadable lock file (each entry needs a sha256); restore it from a backup or delete "
                             "it to record the checksums afresh", self.path)
        self.entries: dict[str, dict] = entries

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


def changed_files(folder: Path, files: tuple[FileSpec, ...]) -> list[str]:
    """One line per kept file (not an unpacked archive) whose bytes differ from the sha256 it was verified
    against: published, locked, or recorded in its stamp. A truncated or edited ground truth is caught here."""
    lock, problems = ChecksumLock(folder), []
    for spec in files:
        path, stamp = folder / spec.name, stamp_path(folder, spec)
        if spec.extract_to is not None or not path.is_file():
            continue
        try:
            recorded = json.loads(stamp.read_text()).get("sha256") if stamp.is_file() else None
        except (ValueError, AttributeError):
            recorded = None
        expected = spec.sha256 or lock.sha256(spec.name) or recorded
        if expected is not None and sha256_of(path) != expected:
            problems.append(f"{path}: sha256 differs from the {expected[:12]}... it was verified against (truncated "
                            "or edited); delete it and download it again")
    return problems


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
        except ArchiveWriteError:
            raise  # a full or read-only disk: the verified archive stays for the rerun
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
