"""Safe archive extraction: nothing is written outside the target, and nothing half-extracted is left in it.

Every member is checked before it is written: absolute paths, ``..`` components, links and device files are
refused (dataset archives hold plain files and folders). Members go to a staging folder next to the target
and are moved in only when the whole archive has been read, so a corrupt or hostile archive leaves the
target as it was.
"""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from benchmarks.core.errors import InputError


def _checked_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise InputError(f"member {name!r} would be written outside the target folder; refused, "
                         "nothing was extracted (is this the right archive?)", archive)
    return path


def _tar_files(archive: Path, staging: Path) -> Iterator[PurePosixPath]:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = _checked_name(member.name, archive)
            if member.isdir():
                continue
            if not member.isfile():
                raise InputError(f"member {member.name!r} is a link or device, not a plain file; refused, "
                                 "nothing was extracted", archive)
            tar.extract(member, staging, filter="data")
            yield name


def _zip_files(archive: Path, staging: Path) -> Iterator[PurePosixPath]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = _checked_name(info.filename, archive)
            if info.is_dir():
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link stored by Unix zip
                raise InputError(f"member {info.filename!r} is a symbolic link; refused, nothing was extracted",
                                 archive)
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
    staging.mkdir(parents=True)
    try:
        reader = _zip_files if zipfile.is_zipfile(archive) else _tar_files
        try:
            names = list(reader(archive, staging))
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
            raise InputError(f"corrupt or unreadable archive ({type(error).__name__}: {error}); delete it "
                             "and download again", archive) from None
        moves = {name: PurePosixPath(name.name) if flatten else name for name in names}
        clashes = sorted(str(n) for n, count in Counter(moves.values()).items() if count > 1)
        if clashes:
            raise InputError(f"members share the file name {clashes[0]} and cannot be flattened", archive)
        for source, destination in moves.items():
            out = target / destination
            out.parent.mkdir(parents=True, exist_ok=True)
            (staging / source).replace(out)
        return len(moves)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
