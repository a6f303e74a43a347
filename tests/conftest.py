"""Shared fixtures: the real ground-truth files in tests/data and a temporary results root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
settings.register_profile("suite", deadline=None, max_examples=200, derandomize=True)
settings.load_profile("suite")

DATA = Path(__file__).parent / "data"
GND = {name: DATA / "revisitop" / f"gnd_{name}.pkl" for name in ("roxford5k", "rparis6k")}
PLACES = {"pitts30k_test": DATA / "places" / "pitts30k_test.npz", "tokyo247": DATA / "places" / "tokyo247.npz"}


@pytest.fixture
def gnd_paths() -> dict[str, Path]:
    return GND
