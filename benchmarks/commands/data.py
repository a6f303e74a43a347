"""``python -m benchmarks data``: download, verify and describe datasets."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from benchmarks.commands.options import ROOT, dataset_spec, print_json


@click.group()
def data() -> None:
    """Download, verify and describe datasets (all under one data root, never in the repository)."""


@data.command("download")
@click.argument("name")
@ROOT
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX",
              help="A local copy tried before the official URLs, laid out as the data root: "
                   "URL_PREFIX/<dataset>/<file>. Repeatable.")
@click.option("--mirror-only", is_flag=True, help="Never try the official URLs (machines without internet).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where images given out on request already are (Pittsburgh, Tokyo 24/7): linked, then checked.")
@click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True, help="Parallel downloads.")
@click.option("--keep-archives", is_flag=True, help="Keep archives after unpacking (to serve as a mirror).")
@click.option("--retries", type=click.IntRange(min=1), default=5, show_default=True,
              help="Tries per source without progress before moving to the next source.")
@click.option("--archives", default=None, metavar="RANGES",
              help="Only these of a dataset's numbered archives, e.g. 0-9,42 (gldv2: 0-499; default: all).")
@click.option("--allow-insecure-http", is_flag=True,
              help="Accept files without a published checksum over plain http (R1M); their sha256 is then locked.")
def data_download(name: str, root: Path | None, mirrors: tuple[str, ...], mirror_only: bool, images: Path | None,
                  jobs: int, keep_archives: bool, retries: int, archives: str | None,
                  allow_insecure_http: bool) -> None:
    """Fetch (or generate) dataset NAME: resumable, verified, unpacked safely."""
    from benchmarks.core.acquire import AcquireOptions, parse_archive_ranges
    from benchmarks.core.data_root import data_root
    from benchmarks.core.download import Retry

    spec, folder_root = dataset_spec(name), data_root(root)
    options = AcquireOptions(mirrors=mirrors, mirror_only=mirror_only, jobs=jobs, keep_archives=keep_archives,
                             retry=Retry(attempts=retries), images=images,
                             archives=None if archives is None else parse_archive_ranges(archives),
                             allow_insecure_http=allow_insecure_http)
    spec.prepare(folder_root, options)
    click.echo(f"{name}: ready under {spec.folder(folder_root)}; check it with "
               f"`python -m benchmarks data verify {name}`")


@data.command("verify")
@click.argument("name")
@ROOT
def data_verify(name: str, root: Path | None) -> None:
    """Re-check counts, ground truth and every image of NAME; lists each problem (exit code 1 if any)."""
    from benchmarks.core.acquire import changed_files
    from benchmarks.core.data_root import data_root

    spec, folder_root = dataset_spec(name), data_root(root)
    problems = changed_files(spec.folder(folder_root), spec.files) + spec.check(folder_root)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        click.echo(f"{name}: {len(problems)} problem(s)")
        raise SystemExit(1)
    click.echo(f"{name}: sound")


def _checksum_state(spec: Any, locked: str | None) -> str:
    if spec.manual:
        return "given out on request"
    if spec.sha256:
        return "published"
    return "locked at first download" if locked else "none published; recorded at first download"


@data.command("info")
@click.argument("name")
@ROOT
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_info(name: str, root: Path | None, as_json: bool) -> None:
    """What NAME is, its protocol, files (URLs, checksums, state) and, once there, its counts."""
    from benchmarks.core.acquire import ChecksumLock, is_acquired
    from benchmarks.core.data_root import data_root

    spec, folder_root = dataset_spec(name), data_root(root)
    folder = spec.folder(folder_root)
    lock = ChecksumLock(folder)
    files = [{"name": f.name, "urls": list(f.urls), "manual": f.manual,
              "sha256": f.sha256 or lock.sha256(f.name),
              "checksum": _checksum_state(f, lock.sha256(f.name)),
              "acquired": is_acquired(folder, f)} for f in spec.files]
    info = {"name": name, "description": spec.description, "protocol": str(spec.protocol),
            "splits": list(spec.splits), "requires": list(spec.requires), "folder": str(folder),
            "files": files, **spec.summary(folder_root)}
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if key == "files":
            acquired = sum(f["acquired"] for f in files)
            click.echo(f"files: {acquired} of {len(files)} acquired" if files else "files: none to download")
            for f in files[:6]:
                mark = "x" if f["acquired"] else " "
                click.echo(f"  [{mark}] {f['name']}  sha256: {f['checksum']}  {(f['urls'] or [''])[0]}")
            if len(files) > 6:
                click.echo(f"  ... and {len(files) - 6} more (--json lists them all)")
        else:
            click.echo(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
