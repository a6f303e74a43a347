"""Safe archive extraction: nothing is written outside the target, and nothing half-extracted is left in it.

Every member is checked before it is written: absolute paths, ``..`` components, links and device files are
refused (dataset archives hold plain files and folders). Members go to a staging folder next to the target
and are moved in only when the whole archive has been read, so a corrupt or hostile archive leaves the
target as it was. What an archive may expand to is capped (an archive bomb is refused) and each member must
fit in the free space before it is written; a write that fails (disk full, folder not writable) raises
:class:`ArchiveWriteError`, so the caller keeps the verified archive.
"""
from __future__ import annotations

import errno
import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from benchmarks.core.atomic import write_failure
from benchmarks.core.errors import InputError

EXPANSION_RATIO = 20  # an archive may expand to this many times its size (JPEG archives: about 1, text: 5-10)
EXPANSION_FLOOR = 256 * 2**20  # ... or to this many bytes, whichever is larger
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


class ArchiveWriteError(InputError):
    """Extraction failed writing, not reading: the archive is sound and must be kept."""


class _Budget:
    """Bytes an archive may still expand to; each member must also fit in the free space of ``staging``."""

    def __init__(self, archive: Path, staging: Path) -> None:
        self.archive, self.staging = archive, staging
        self.limit = self.left = max(EXPANSION_FLOOR, EXPANSION_RATIO * archive.stat().st_size)

    def take(self, name: str, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise InputError(f"expands beyond {self.limit} bytes (at member {name!r}): an archive bomb or not the "
                             "archive declared; refused, nothing was extracted", self.archive)
        if size > shutil.disk_usage(self.staging).free:
            raise ArchiveWriteError(f"cannot write: member {name!r} ({size} bytes) does not fit in the free space; "
                                    "nothing was extracted and the archive is kept (free some space and rerun)",
                                    self.staging)


def _checked_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise InputError(f"member {name!r} would be written outside the target folder; refused, "
                         "nothing was extracted (is this the right archive?)", archive)
    return path


def _tar_files(archive: Path, staging: Path) -> Iterator[PurePosixPath]:
    budget = _Budget(archive, staging)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = _checked_name(member.name, archive)
            if member.isdir():
                continue
            if not member.isfile():
                raise InputError(f"member {member.name!r} is a link or device, not a plain file; refused, "
                                 "nothing was extracted", archive)
            budget.take(member.name, member.size)
            tar.extract(member, staging, filter="data")
            yield name


def _zip_files(archive: Path, staging: Path) -> Iterator[PurePosixPath]:
    budget = _Budget(archive, staging)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = _checked_name(info.filename, archive)
            if info.is_dir():
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link stored by Unix zip
                raise InputError(f"member {info.filename!r} is a symbolic link; refused, nothing was extracted",
                                 archive)
            budget.take(info.filename, info.file_size)  # zipfile reads no more than the declared size
            zf.extract(info, staging)
            yield name


def extract(archive: Path, target: Path, *, flatten: bool = False) -> int:
    """Extract a .tar, .tar.gz/.tgz or .zip into ``target``; returns the number of files.

    ``flatten``: keep only the files, each under its base name (the Paris archives' per-landmark folders);
    two files with one base name are refused.
    """
    archive, target = Path(archive), Path(target)
    staging = target.parent / f".{target.name}.{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as error:
        raise ArchiveWriteError(write_failure(error, staging, "the archive is kept").message, staging) from None
    try:
        reader = _zip_files if zipfile.is_zipfile(archive) else _tar_files
        try:
            names = list(reader(archive, staging))
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
            if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:  # the disk: keep the verified bytes
                raise ArchiveWriteError(write_failure(error, target, "nothing was extracted and the archive is "
                                                      "kept").message, target) from None
            raise InputError(f"corrupt or unreadable archive ({type(error).__name__}: {error}); delete it "
                             "and download again", archive) from None
        moves = {name: PurePosixPath(name.name) if flatten else name for name in names}
        clashes = sorted(str(n) for n, count in Counter(moves.values()).items() if count > 1)
        if clashes:
            raise InputError(f"members share the file name {clashes[0]} and cannot be flattened", archive)
        try:
            for source, destination in moves.items():
                out = target / destination
                out.parent.mkdir(parents=True, exist_ok=True)
                (staging / source).replace(out)
        except OSError as error:
            raise ArchiveWriteError(write_failure(error, target, "the archive is kept").message, target) from None
        return len(moves)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
