"""The embedded benchmarks: deterministic, read by the repository's readers, and neither trivial nor impossible."""
from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.evaluation.metrics import recall_at_n, revisited_scores
from benchmarks.evaluation.search import rank_by_inner_product
from datasets.formats import DbStruct, read_dbstruct, read_revisited_gnd
from datasets.synthetic_scenes import generate_landmarks
from datasets.synthetic_streets import generate_places
from tests.naive_descriptors import colour_histogram, colour_thumbnail

SPLITS = ("train", "val", "test")
Generated = tuple[Path, dict[str, dict[str, int]]]  # (root, counts per benchmark)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """Both benchmarks from seed 0, generated once for the module: (root, counts per benchmark)."""
    root = tmp_path_factory.mktemp("synthetic")
    counts = {"landmarks": generate_landmarks(root / "landmarks", seed=0),
              "places": generate_places(root / "places", seed=0)}
    return root, counts


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _structs(root: Path) -> dict[str, DbStruct]:
    return {split: read_dbstruct(root / "places" / "datasets" / f"synth_places_{split}.mat") for split in SPLITS}


def test_counts(generated: Generated) -> None:
    _, counts = generated
    assert counts == {"landmarks": {"db": 140, "queries": 20, "train": 240},
                      "places": {"train_db": 300, "train_queries": 100, "val_db": 100, "val_queries": 30,
                                 "test_db": 200, "test_queries": 60}}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(generated: Generated, tmp_path: Path) -> None:
    root, _ = generated
    for name, generate in (("landmarks", generate_landmarks), ("places", generate_places)):
        generate(tmp_path / "again" / name, seed=0)
        generate(tmp_path / "other" / name, seed=1)
        first, again, other = (_tree_digest(r / name) for r in (root, tmp_path / "again", tmp_path / "other"))
        assert again == first
        assert len(other) == len(first)  # as many files (query names carry the seed's random headings) ...
        other_digests = set(other.values())
        alike = {path for path, digest in first.items() if digest in other_digests}
        assert alike <= {"train.csv"}  # ... and none alike but the list of training ids and classes
    # scipy writes "Created on: <time>" into a .mat header; write_dbstruct replaces it (seconds would differ).
    header = (root / "places" / "datasets" / "synth_places_test.mat").read_bytes()[:128]
    assert header.startswith(b"MATLAB 5.0 MAT-file") and b"Created on" not in header


def test_landmarks_are_read_by_the_gnd_reader(generated: Generated) -> None:
    root, counts = generated
    folder = root / "landmarks"
    gnd = read_revisited_gnd(folder / "gnd_synth_landmarks.pkl")
    assert (gnd.n_db, gnd.n_queries) == (counts["landmarks"]["db"], counts["landmarks"]["queries"])
    assert not set(gnd.db_names) & set(gnd.query_names)
    assert sorted(gnd.db_names) == list(gnd.db_names)
    assert sum(n.startswith("distractor_") for n in gnd.db_names) == 40
    assert sorted(p.stem for p in (folder / "jpg").iterdir()) == sorted(gnd.db_names + gnd.query_names)
    for name in gnd.db_names:
        with Image.open(folder / "jpg" / f"{name}.jpg") as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (128, 96))
    boxes = gnd.query_boxes
    assert boxes is not None and boxes.shape == (gnd.n_queries, 4)
    for q, name in enumerate(gnd.query_names):
        landmark = name.removeprefix("query_").rsplit("_", 1)[0]
        easy, hard, junk = gnd.easy[q], gnd.hard[q], gnd.junk[q]
        ids = np.concatenate([easy, hard, junk])
        assert len(np.unique(ids)) == len(ids)  # disjoint lists
        assert ids.min() >= 0 and ids.max() < gnd.n_db
        assert len(easy) >= 2 and len(hard) >= 2  # every query is scored in all three settings
        assert sorted(gnd.db_names[i] for i in ids) == [n for n in gnd.db_names if n.startswith(landmark + "_")]
        with Image.open(folder / "jpg" / f"{name}.jpg") as img:
            assert img.size == (160, 120)
            x1, y1, x2, y2 = boxes[q]
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
            assert x2 - x1 >= 40 and y2 - y1 >= 30  # the landmark, not a sliver
            assert img.crop((x1, y1, x2, y2)).size == (x2 - x1, y2 - y1)  # integer boxes: no rounding in crop
    labels = np.concatenate([[0] * len(e) + [1] * len(h) + [2] * len(j)
                             for e, h, j in zip(gnd.easy[::2], gnd.hard[::2], gnd.junk[::2], strict=True)])
    assert np.bincount(labels).tolist() == [40, 45, 15]  # seed 0: of 100 landmark views, easy / hard / junk


def test_landmark_training_split(generated: Generated) -> None:
    root, counts = generated
    folder = root / "landmarks"
    with (folder / "train.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "landmark_id"]
    ids, classes = [r[0] for r in rows[1:]], [int(r[1]) for r in rows[1:]]
    assert len(ids) == counts["landmarks"]["train"] and ids == sorted(ids) and len(set(ids)) == len(ids)
    assert np.bincount(classes).tolist() == [12] * 20
    assert sorted(p.stem for p in (folder / "train").iterdir()) == ids
    with Image.open(folder / "train" / f"{ids[0]}.jpg") as img:
        assert img.size == (128, 96)


def test_places_are_read_by_the_dbstruct_reader(generated: Generated) -> None:
    root, counts = generated
    images = root / "places" / "images"
    structs = _structs(root)
    all_names: list[str] = []
    for split, db in structs.items():
        assert db.which_set == split and db.pos_dist_thr == 25.0
        assert len(db.db_image_names) == counts["places"][f"{split}_db"]
        assert len(db.query_image_names) == counts["places"][f"{split}_queries"]
        for path in [images / n for n in db.db_image_names] + [images / "queries_real" / n
                                                               for n in db.query_image_names]:
            with Image.open(path) as img:
                assert (img.format, img.size) == ("JPEG", (128, 96))
        assert all(n.split("/")[1].endswith(("_pitch1_yaw1.jpg", "_pitch1_yaw2.jpg")) for n in db.db_image_names)
        assert np.all(np.abs(db.utm_db - [585000, 4477000]) < 3000)  # Pittsburgh's neighbourhood
        distance = np.linalg.norm(db.utm_queries[:, None] - db.utm_db[None], axis=2)
        assert np.all(distance.min(axis=1) <= 25.0)  # every query has a positive ...
        assert np.all((distance > 25.0).sum(axis=1) >= 0.8 * len(db.db_image_names))  # ... and many negatives
        all_names += db.db_image_names + tuple("queries_real/" + n for n in db.query_image_names)
    assert len(set(all_names)) == len(all_names)  # no image shared between splits
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):  # disjoint areas
        gap = np.linalg.norm(structs[a].utm_db[:, None] - structs[b].utm_db[None], axis=2).min()
        assert gap > 100.0


def test_landmarks_are_neither_trivial_nor_impossible(generated: Generated) -> None:
    root, _ = generated
    folder = root / "landmarks"
    gnd = read_revisited_gnd(folder / "gnd_synth_landmarks.pkl")
    assert gnd.query_boxes is not None
    db = np.stack([colour_histogram(Image.open(folder / "jpg" / f"{n}.jpg")) for n in gnd.db_names])
    queries = np.stack([colour_histogram(Image.open(folder / "jpg" / f"{n}.jpg").crop(tuple(box)))
                        for n, box in zip(gnd.query_names, gnd.query_boxes, strict=True)])
    scores = revisited_scores(rank_by_inner_product(queries, db), gnd.easy, gnd.hard, gnd.junk, gnd.n_db)
    rng = np.random.default_rng(0)
    chance = [revisited_scores(np.stack([rng.permutation(gnd.n_db) for _ in range(gnd.n_queries)]),
                               gnd.easy, gnd.hard, gnd.junk, gnd.n_db) for _ in range(20)]
    # Measured (seed 0): histogram mAP easy / medium / hard 0.48 / 0.37 / 0.13 (mP@5 0.45 / 0.48 / 0.15);
    # chance 0.047 / 0.077 / 0.050 (standard deviation 0.012 over random rankings). Seeds 1-7: easy 0.37-0.51,
    # medium 0.29-0.41, hard 0.10-0.16.
    for setting, (low, high) in {"easy": (0.25, 0.7), "medium": (0.2, 0.6), "hard": (0.09, 0.35)}.items():
        assert np.mean([c[setting].map for c in chance]) < 0.09
        assert low < scores[setting].map < high, setting
    assert scores["easy"].map > scores["hard"].map + 0.15  # hard views are harder


def test_places_are_neither_trivial_nor_impossible(generated: Generated) -> None:
    root, _ = generated
    images = root / "places" / "images"
    db_struct = _structs(root)["test"]
    db = np.stack([colour_thumbnail(Image.open(images / n)) for n in db_struct.db_image_names])
    queries = np.stack([colour_thumbnail(Image.open(images / "queries_real" / n))
                        for n in db_struct.query_image_names])
    recall = recall_at_n(rank_by_inner_product(queries, db), db_struct.utm_queries, db_struct.utm_db, 25.0, (1, 5))
    # Chance level, exactly: a uniformly random list of N out of n_db misses all p positives w.p. C(n-p, N)/C(n, N).
    n_db = len(db)
    positives = (np.linalg.norm(db_struct.utm_queries[:, None] - db_struct.utm_db[None], axis=2) <= 25.0).sum(1)
    chance = {n: np.mean([1 - math.comb(n_db - p, n) / math.comb(n_db, n) for p in positives]) for n in (1, 5)}
    # Measured (seed 0): Recall@1 / @5 0.28 / 0.70; chance 0.048 / 0.22. Seeds 1-7: 0.13-0.40 / 0.47-0.63.
    assert chance[1] < 0.08 and chance[5] < 0.3
    assert 0.15 < recall.recall(1) < 0.6
    assert 0.45 < recall.recall(5) < 0.9
