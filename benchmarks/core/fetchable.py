"""Before any heavy work: can every file a run needs be fetched? One probe per set of hosts, and one message
naming each file that no source can give and the three ways to provide it (used by ``reproduce`` and ``train``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.core.download import unreachable
from benchmarks.core.errors import InputError


@dataclass(frozen=True)
class Needed:
    """One file the run needs that is not under the data root: what it is for, where it goes, its sources."""

    what: str
    path: Path
    urls: tuple[str, ...]
    manual: str | None = None


def check_fetchable(needed: list[Needed], data_root: Path, timeout: float = 10.0,
                    local_flag: str = "--weights PATH") -> None:
    """Probe the sources of the needed files (once per set of hosts: the 1M distractors are 101 files on one
    server); raise one :class:`InputError` naming every file that no source can give."""
    probed: dict[tuple[str, ...], str | None] = {}
    unfetchable: dict[tuple[str, str], list[str]] = {}  # (what, why) -> file names
    for item in needed:
        hosts = tuple(urlparse(url).netloc for url in item.urls)
        if hosts not in probed:
            probed[hosts] = item.manual if not item.urls else unreachable(item.urls, timeout)
        why = item.manual if not item.urls else probed[hosts]
        if why is not None:
            unfetchable.setdefault((item.what, why), []).append(item.path.name)
    failures = [f"  {what}: {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''} "
                f"({why})" for (what, why), names in unfetchable.items()]
    if failures:
        raise InputError(cannot_fetch_message("nothing was downloaded or written", failures, data_root,
                                              local_flag))


def cannot_fetch_message(state: str, failures: list[str], data_root: Path, local_flag: str = "--weights PATH") -> str:
    return (f"could not fetch what this run needs ({state}):\n" + "\n".join(failures)
            + "\nProvide it in one of three ways:\n"
            "  1. --mirror URL_PREFIX: a copy laid out as the data root (URL_PREFIX/<dataset>/<file>, "
            "URL_PREFIX/weights/<method or init>/<file>), e.g. another machine's data root served over HTTP;\n"
            f"  2. the files already under the data root ({data_root}/<dataset>/<file>, "
            f"{data_root}/weights/<method or init>/<file>): they are verified, unpacked and used as if downloaded;\n"
            f"  3. {local_flag}: a local weights file (a checkpoint of this suite, or the released file).")
