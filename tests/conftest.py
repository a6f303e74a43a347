"""Shared fixtures: the real ground-truth files in tests/data; no test reaches beyond 127.0.0.1."""
from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.loopback import LoopbackServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
settings.register_profile("suite", deadline=None, max_examples=200, derandomize=True)
settings.load_profile("suite")

DATA = Path(__file__).parent / "data"
GND = {name: DATA / "revisitop" / f"gnd_{name}.pkl" for name in ("roxford5k", "rparis6k")}
PLACES = {"pitts30k_test": DATA / "places" / "pitts30k_test.npz", "tokyo247": DATA / "places" / "tokyo247.npz"}


@pytest.fixture
def gnd_paths() -> dict[str, Path]:
    return GND


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A local HTTP server (tests/loopback.py) for download tests; tests put files in ``server.files``."""
    with LoopbackServer() as s:
        yield s


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the internet: a request to any host but 127.0.0.1 fails the test."""
    real = urllib.request.urlopen

    def guarded(request: urllib.request.Request | str, *args: object, **kwargs: object) -> object:
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
            raise AssertionError(f"a test tried to reach the network: {url}")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding both embedded benchmarks, generated once per session."""
    from benchmarks.core.acquire import AcquireOptions
    from datasets import load_plugins

    root = tmp_path_factory.mktemp("embedded")
    for name in ("synth_landmarks", "synth_places"):
        load_plugins().get(name)().prepare(root, AcquireOptions())
    return root
