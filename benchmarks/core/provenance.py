"""Where a result came from: the git state of the suite and the software and hardware it ran on."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("numpy", "torch", "timm", "faiss-cpu", "scipy")
OUTPUTS = ("results", "paper_tables")  # what runs write: changes there do not make the code dirty
CODE_FOLDERS = ("benchmarks", "methods", "datasets")  # the code a run imports, plugins included


def git_state(repo: Path = REPO_ROOT) -> tuple[str, bool]:
    """(commit hash, dirty) of ``repo``; ("unknown", True) outside a git checkout. Dirty: a tracked file
    outside :data:`OUTPUTS` has uncommitted changes (results being written do not count), or a file that git
    neither tracks nor ignores lies in :data:`CODE_FOLDERS` (a plugin there is imported: the commit lacks it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  *(f":(exclude){folder}" for folder in OUTPUTS)], cwd=repo,
                                 capture_output=True, text=True, check=True).stdout
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", *CODE_FOLDERS],
                                   cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, bool(changed.strip() or untracked.strip())


def is_tracked(path: Path, repo: Path = REPO_ROOT) -> bool:
    """Whether ``path`` is a file committed in ``repo`` (``git ls-files``); False outside a git checkout."""
    try:
        return subprocess.run(["git", "ls-files", "--error-unmatch", "--", str(Path(path).resolve())], cwd=repo,
                              capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def environment(device: str = "cpu") -> dict[str, str]:
    """Versions of python and the numeric packages, the platform and the device a run used."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "device": device,
           "processor": platform.machine()}
    env.update({package: _version(package) for package in _PACKAGES})
    return env

