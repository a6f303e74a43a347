"""The one way bytes enter the suite: HTTP(S) downloads that resume, retry, fall back and verify.

``fetch(urls, dest)`` tries each source in order (mirrors first, then the official URLs). Bytes go to
``<dest>.part``; an interrupted transfer resumes with a byte-range request guarded by ``If-Range`` (so a file
changed on the server restarts instead of splicing two versions), retries back off exponentially, and the
finished file is checked (size, sha256, and md5 where a dataset publishes only that) before one atomic rename
puts it at ``dest``. A file that fails its checksum is deleted: nothing unverified is ever left at ``dest``.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from tqdm import tqdm

from benchmarks.core.atomic import atomic_write_text, remove_leftovers, write_failure
from benchmarks.core.errors import InputError
from benchmarks.core.locks import exclusive

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "image-retrieval-benchmarks (+https://github.com; python urllib)"
# HTTP statuses worth retrying on the same source; any other error status moves on to the next source.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Plain http from these hosts never crosses a network, so nothing on the way can alter the bytes.
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True)
class Fetched:
    """A verified file at ``path``: its sha256, size in bytes and the URL it came from (None if already there)."""

    path: Path
    sha256: str
    size: int
    url: str | None


@dataclass(frozen=True)
class Retry:
    """How hard to try one source: ``attempts`` tries without progress, sleeping ``backoff * 2**k`` between."""

    attempts: int = 5
    backoff: float = 1.0
    timeout: float = 60.0


class _Transient(Exception):
    """A failure worth retrying on the same source (dropped connection, timeout, 5xx)."""


class _SourceFailed(Exception):
    """This source cannot give the file (404, wrong size or checksum): try the next one."""


def hex_digests(path: Path, algorithms: Sequence[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file by algorithm name (``sha256``, ``md5``), all from one read in 1 MiB chunks."""
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}  # integrity, not secrecy
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for digest in digests.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    return hex_digests(path)["sha256"]


def unverifiable(url: str) -> str | None:
    """Why ``url`` may not be used without a checksum (plain http over a network), or None when it may."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        return ("plain http without a checksum: anything on the way could alter the bytes unnoticed; use an "
                "https mirror, declare the file's sha256, or trust this one download with --allow-insecure-http "
                "(its sha256 is then recorded and held)")
    return None


def fetch(urls: Sequence[str], dest: Path, *, sha256: str | None = None, size: int | None = None,
          md5: str | None = None, retry: Retry = Retry(), label: str | None = None, position: int | None = None,
          sleep: Callable[[float], None] = time.sleep, allow_insecure_http: bool = False) -> Fetched:
    """Download ``dest`` from the first of ``urls`` that gives the right bytes.

    ``sha256``/``size``: what the file must be (None: not known; the caller records what it got). ``md5``:
    checked as well, for datasets that publish only md5 (Google Landmarks v2). Without ``sha256``,
    plain-http sources (other than loopback) are refused unless ``allow_insecure_http``. A file already at
    ``dest`` that matches is not downloaded again. Raises :class:`InputError` naming ``dest`` and every
    source's failure when no source works, or naming the file that could not be written (disk full, no
    permission); the partial file of a dropped transfer is kept for the next run to resume, a file with
    wrong contents is deleted.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failure(error, dest.parent, "nothing was downloaded") from None
    if dest.exists():
        have = hex_digests(dest, ("sha256", "md5") if md5 else ("sha256",))
        mismatch = _mismatch(have, sha256, md5)
        if mismatch is None:
            part, meta = (dest.with_name(dest.name + suffix) for suffix in (".part", ".part.json"))
            if not part.exists():  # a run killed between the final rename and removing its record
                meta.unlink(missing_ok=True)
                remove_leftovers(meta)
            return Fetched(dest, have["sha256"], dest.stat().st_size, None)
        log.warning("%s: %s; downloading it again", dest, mismatch)
        dest.unlink()
    if not urls:
        raise InputError("no source to download from", dest)
    failures = []
    secure_only = sha256 is None and not allow_insecure_http
    with exclusive(dest, doing="downloading"):
        for url in urls:
            try:
                insecure = unverifiable(url) if secure_only else None
                if insecure is not None:
                    raise _SourceFailed(insecure)
                got = _from_source(url, dest, sha256, md5, size, retry, label or dest.name, position, sleep,
                                   secure_only)
            except _SourceFailed as failure:
                failures.append(f"{url}: {failure}")
                log.warning("%s: %s", url, failure)
                continue
            return Fetched(dest, got, dest.stat().st_size, url)
    part = dest.with_name(dest.name + ".part")
    if part.exists() and part.stat().st_size:
        advice = (f"run the command again to resume from byte {part.stat().st_size}, or give a working copy "
                  "with --mirror URL_PREFIX")
    else:
        advice = (f"nothing was fetched: check the connection, or place the file at {dest} yourself (it is "
                  "verified as if downloaded) or give a copy with --mirror URL_PREFIX (laid out as the data root)")
    if len(failures) == 1:
        raise InputError(f"could not be downloaded, nothing was left in its place: {failures[0]}; {advice}", dest)
    raise InputError("could not be downloaded, nothing was left in its place:\n  " + "\n  ".join(failures)
                     + f"\n  {advice}", dest)


def _mismatch(have: dict[str, str], sha256: str | None, md5: str | None) -> str | None:
    """What is wrong with a file of digests ``have`` given the expected ones (None: it matches)."""
    for name, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and have[name] != expected:
            return f"{name} {have[name]} does not match the expected {expected}"
    return None


def _from_source(url: str, dest: Path, sha256: str | None, md5: str | None, size: int | None, retry: Retry,
                 label: str, position: int | None, sleep: Callable[[float], None], secure_only: bool) -> str:
    """Transfer from one URL with retries, then verify and rename; returns the sha256. ``secure_only``:
    refuse a redirect to plain http (the file has no checksum)."""
    part, meta = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")
    failed_tries = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            total = _transfer(url, part, meta, size, retry.timeout, label, position, secure_only)
            break
        except _Transient as error:
            progressed = part.exists() and part.stat().st_size > before
            failed_tries = 0 if progressed else failed_tries + 1
            if failed_tries >= retry.attempts:
                raise _SourceFailed(f"gave up after {retry.attempts} tries without progress ({error})") from None
            delay = retry.backoff * 2 ** max(failed_tries - 1, 0)
            log.info("%s: %s; retrying in %.1f s (resuming at byte %d)", url, error,
                     delay, part.stat().st_size if part.exists() else 0)
            sleep(delay)
    got_size = part.stat().st_size
    problem = None
    if total is not None and got_size != total:
        problem = f"server sent {got_size} bytes of {total}"
    elif size is not None and got_size != size:
        problem = f"{got_size} bytes, expected {size}"
    have = hex_digests(part, ("sha256", "md5") if md5 else ("sha256",))
    mismatch = _mismatch(have, sha256, md5)
    if problem is None and mismatch is not None:
        problem = f"{mismatch} (corrupt or changed file)"
    if problem is not None:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise _SourceFailed(problem + "; the partial file was deleted")
    try:
        part.replace(dest)
    except OSError as error:
        raise write_failure(error, dest, f"the verified download stays in {part.name}") from None
    meta.unlink(missing_ok=True)
    remove_leftovers(meta)  # a killed run's half-written record; we hold the download's lock
    return have["sha256"]


def _resume_point(part: Path, meta: Path, url: str) -> tuple[int, str | None]:
    """Bytes already in ``part`` from this same URL, and the validator (ETag / Last-Modified) they came with."""
    if not part.exists():
        return 0, None
    try:
        saved = json.loads(meta.read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("url") != url:  # bytes from another source or of unknown origin: start over
        part.unlink()
        return 0, None
    return part.stat().st_size, saved.get("validator")


def _transfer(url: str, part: Path, meta: Path, size: int | None, timeout: float, label: str,
              position: int | None, secure_only: bool) -> int | None:
    """Append the rest of ``url`` to ``part``; returns the full size the server announced (None if unknown)."""
    offset, validator = _resume_point(part, meta, url)
    if size is not None and offset == size:
        return size
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        if validator:
            request.add_header("If-Range", validator)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the part may be complete; verification decides
            return None
        if error.code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {error.code}") from None
        raise _SourceFailed(f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):  # no server there: retrying cannot help
            raise _SourceFailed(f"cannot reach {urlsplit(url).netloc} ({reason}); not retried") from None
        raise _Transient(f"{type(error).__name__}: {reason}") from None
    with response:
        insecure = unverifiable(response.geturl()) if secure_only else None
        if insecure is not None:  # an https (or loopback) URL redirected to plain http
            raise _SourceFailed(f"redirected to {response.geturl()}: {insecure}")
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, not {offset}")
        else:  # 200: the server ignored the range or the file changed (If-Range): start over
            if offset:
                log.info("%s: the server sent the whole file; restarting from byte 0", url)
            offset, total = 0, _int_or_none(response.headers.get("Content-Length"))
        if size is not None and total is not None and total != size:
            raise _SourceFailed(f"the server's file has {total} bytes, expected {size}")
        atomic_write_text(meta, json.dumps({"url": url, "validator": response.headers.get("ETag")
                                            or response.headers.get("Last-Modified"), "total": total}))
        _stream(response, part, offset, total, label, position)
    return total


def _stream(response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, label: str,
            position: int | None) -> None:
    """Append the response body to ``part``: a failed read is transient (resume), a failed write is final."""
    try:
        with part.open("ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
            position=position, leave=position is None, disable=None, dynamic_ncols=True,
        ) as bar:
            for block in _blocks(response, out):
                out.write(block)
                bar.update(len(block))
            if total is not None and out.tell() < total:
                raise _Transient(f"connection closed after {out.tell()} of {total} bytes")
    except OSError as error:  # reading errors became _Transient in _blocks: this is the disk or the folder
        raise write_failure(error, part, "the bytes written so far are kept for the next run to resume "
                                         "from") from None


def _blocks(response: http.client.HTTPResponse, out: IO[bytes]) -> Iterator[bytes]:
    while True:
        try:
            block = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(f"connection lost after {out.tell()} bytes ({type(error).__name__})") from None
        if not block:
            return
        yield block


def _content_range(value: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None when ``*``)."""
    try:
        _unit, spec = value.split(" ", 1)
        span, total = spec.split("/", 1)
        return int(span.split("-", 1)[0]), (None if total.strip() == "*" else int(total))
    except ValueError:
        raise _Transient(f"unreadable Content-Range {value!r}") from None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def unreachable(urls: Sequence[str], timeout: float = 10.0) -> str | None:
    """None when a server answers for one of ``urls`` (any HTTP status: the host is there), else why none did
    (per host).

    A HEAD request per URL, nothing written: lets a command that needs many files stop before the first
    download when there is no connection.
    """
    failures = []
    for url in urls:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
            return None
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            failures.append(f"{urlsplit(url).netloc or url}: {type(error).__name__}: {getattr(error, 'reason', error)}")
    return "; ".join(failures) or "no source to download from"
