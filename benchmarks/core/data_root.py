"""Where datasets, downloads and caches live: one root, ``$BENCH_DATA``, never inside the repository."""
from __future__ import annotations

import os
from pathlib import Path

from benchmarks.core.errors import InputError
from benchmarks.core.provenance import REPO_ROOT

ENV_VAR = "BENCH_DATA"


def default_root() -> Path:
    """``$XDG_CACHE_HOME/image-retrieval-benchmarks`` (``~/.cache/...`` when XDG_CACHE_HOME is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "image-retrieval-benchmarks"


def data_root(override: Path | None = None) -> Path:
    """The data root: ``override`` (``--root``), else ``$BENCH_DATA``, else :func:`default_root`."""
    given = Path(override or os.environ.get(ENV_VAR) or default_root()).expanduser()
    try:
        root = given.resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
        raise InputError(f"the data root cannot be resolved ({error}); set {ENV_VAR} (or --root) to a folder",
                         given) from None
    if root == REPO_ROOT or REPO_ROOT in root.parents:
        raise InputError(f"data must not live inside the repository; set {ENV_VAR} (or --root) to a folder "
                         "outside it, e.g. ~/.cache/image-retrieval-benchmarks", root)
    blocking = next((p for p in (root, *root.parents) if p.exists()), root)
    if not blocking.is_dir():  # else every dataset would read as 'not downloaded'
        raise InputError(f"the data root {root} is not a folder (this is a file); set {ENV_VAR} (or --root) to a "
                         "folder", blocking)
    return root


def name_under(path: Path, root: Path) -> str:
    """``path`` relative to the data root (so that records survive moving the root), else as given."""
    return str(path.relative_to(root) if path.is_relative_to(root) else path)
