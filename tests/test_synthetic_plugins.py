"""The embedded benchmarks as dataset plugins: `data download` generates once, `verify` and `info` describe
them, and they load through the real layouts' code (crops, dbStruct splits, class-labelled training)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks.commands.main import cli
from benchmarks.core.acquire import AcquireOptions
from datasets import load_plugins
from datasets.base import ClassLabels, PlaceGroundTruth, RevisitedGroundTruth, crop_query
from datasets.synthetic import MANIFEST


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in ("synth_landmarks", "synth_places"):
        assert run("data", "download", name, "--root", root)[0] == 0
    return root


def test_generated_once_then_kept(root):
    manifest = root / "synth_landmarks" / MANIFEST
    before = manifest.stat().st_mtime_ns
    load_plugins().get("synth_landmarks")().prepare(root, AcquireOptions())
    assert manifest.stat().st_mtime_ns == before
    assert json.loads(manifest.read_text())["counts"] == {"db": 140, "queries": 20, "train": 240}
    assert not any(p.name.startswith(".") for p in root.iterdir())  # no staging folder left


def test_landmarks_load_through_the_revisited_code(root):
    spec = load_plugins().get("synth_landmarks")()
    test = spec.load(root)
    gnd = test.ground_truth
    assert isinstance(gnd, RevisitedGroundTruth) and (gnd.n_db, gnd.n_queries) == (140, 20)
    with Image.open(test.query_paths[0]) as image:
        crop = crop_query(image, gnd.query_boxes[0])
    assert crop.size[0] < image.size[0] and crop.size[1] < image.size[1]
    train = spec.load(root, "train")
    assert isinstance(train.ground_truth, ClassLabels) and train.ground_truth.n_classes == 20
    assert len(train.db_paths) == 240 and all(p.exists() for p in train.db_paths)


def test_places_load_all_splits_through_the_dbstruct_code(root):
    spec = load_plugins().get("synth_places")()
    sizes = {split: (len(s.db_paths), len(s.query_paths)) for split in spec.splits for s in [spec.load(root, split)]}
    assert sizes == {"test": (200, 60), "train": (300, 100), "val": (100, 30)}
    gt = spec.load(root).ground_truth
    assert isinstance(gt, PlaceGroundTruth) and gt.threshold == 25.0
    nearest = np.sqrt(((gt.utm_queries[:, None] - gt.utm_db[None]) ** 2).sum(-1)).min(1)
    assert nearest.max() <= 25.0


def test_verify_and_info_describe_them(root):
    assert run("data", "verify", "synth_places", "--root", root) == (0, "synth_places: sound\n")
    code, out = run("data", "info", "synth_landmarks", "--root", root, "--json")
    info = json.loads(out)
    assert code == 0 and info["counts"] == {"test": {"db": 140, "queries": 20}, "train": {"db": 240, "queries": 0}}
    assert info["protocol"] == "revisited" and info["seed"] == 0 and info["generated"] == "yes"


def test_verify_names_a_changed_file(tmp_path):
    spec = load_plugins().get("synth_landmarks")()
    spec.prepare(tmp_path, AcquireOptions())
    victim = tmp_path / "synth_landmarks" / "train.csv"
    victim.write_text(victim.read_text().replace(",0\n", ",1\n", 1))
    assert spec.check(tmp_path) == [
        f"{victim}: missing or changed since it was generated",
        "1 file(s) missing or changed since generation: `python -m benchmarks data download synth_landmarks` "
        "generates the dataset afresh (the same bytes, offline, in seconds)"]


def test_download_regenerates_a_damaged_generated_dataset(tmp_path, caplog):
    spec = load_plugins().get("synth_places")()
    spec.prepare(tmp_path, AcquireOptions())
    images = sorted((tmp_path / "synth_places" / "images" / "000").glob("*.jpg"))
    deleted, truncated = images[0], images[4]
    original = truncated.read_bytes()
    deleted.unlink()
    truncated.write_bytes(original[:100])
    assert len(spec.check(tmp_path)) > 2
    code, out = run("data", "download", "synth_places", "--root", tmp_path)
    assert code == 0 and out.startswith("synth_places: ready")
    assert "synth_places: 2 file(s) missing or changed since generation" in caplog.text
    assert deleted.is_file() and truncated.read_bytes() == original
    assert spec.check(tmp_path) == []
