"""Typed ``--set`` overrides, top-k search against the full ranking (ties), and extraction's size batching."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.evaluation.extract import load_image, size_batches, target_size
from benchmarks.evaluation.search import rank_by_inner_product, top_k_by_inner_product
from methods.base import ExtractionProtocol, parse_overrides
from methods.mscfp import MSCFPConfig
from methods.netvlad import NetVLADConfig
from methods.recipes import TripletRecipe

# --- parse_overrides --------------------------------------------------------------------------------------


def parsed(cls: type, *pairs: str) -> dict:
    return parse_overrides(cls, list(pairs))


def test_int_bool_str_fields() -> None:
    out = parsed(NetVLADConfig, "num_clusters=16", "assignment_bias=true", "backbone=resnet50", "feature_index=3",
                 "drop_final_relu=false")
    assert out == {"num_clusters": 16, "assignment_bias": True, "backbone": "resnet50", "feature_index": 3,
                   "drop_final_relu": False}
    assert type(out["num_clusters"]) is int and type(out["assignment_bias"]) is bool
    config = dataclasses.replace(NetVLADConfig(), **out)
    assert config.num_clusters == 16 and config.backbone == "resnet50"


def test_empty_overrides() -> None:
    assert parse_overrides(NetVLADConfig, []) == {}


@pytest.mark.parametrize("text", ["none", "None", "NONE", "null", "~"])
def test_none_for_an_optional_int(text: str) -> None:
    assert parsed(NetVLADConfig, f"whiten_dim={text}") == {"whiten_dim": None}


def test_optional_int_takes_an_int() -> None:
    out = parsed(NetVLADConfig, "whiten_dim=256")
    assert out == {"whiten_dim": 256} and type(out["whiten_dim"]) is int
    out = parsed(TripletRecipe, "lr_halving_epochs=5")
    assert out == {"lr_halving_epochs": 5}


def test_empty_value_is_the_empty_string() -> None:
    assert parsed(TripletRecipe, "train_from=") == {"train_from": ""}
    assert parsed(TripletRecipe, "train_from=layer4", "optimizer=adam") == {"train_from": "layer4", "optimizer": "adam"}


@pytest.mark.parametrize(("text", "value"), [("0.01", 0.01), ("1", 1.0), ("0", 0.0), (".5", 0.5),
                                             ("1.0e-5", 1e-5), ("-2.5", -2.5)])
def test_float_fields(text: str, value: float) -> None:
    out = parsed(TripletRecipe, f"lr={text}")
    assert out == {"lr": value}
    assert type(out["lr"]) is float  # an int literal for a float field becomes a float


@pytest.mark.parametrize("text", ["1e-5", "1E-5", "5e3", "1e+2"])
def test_float_in_exponent_notation(text: str) -> None:
    """``--set lr=1e-5`` (MSCFP's learning rate as usually written) is a float, not text."""
    assert parsed(TripletRecipe, f"lr={text}") == {"lr": float(text)}


def test_tuple_of_ints() -> None:
    out = parsed(MSCFPConfig, "pool_windows=[2, 3, 4]")
    assert out == {"pool_windows": (2, 3, 4)} and type(out["pool_windows"]) is tuple
    assert parsed(MSCFPConfig, "pool_windows=[2]") == {"pool_windows": (2,)}
    assert parsed(MSCFPConfig, "pool_windows=[]") == {"pool_windows": ()}
    assert parsed(MSCFPConfig, "pool_windows=2,3") == {"pool_windows": (2, 3)}
    assert parsed(MSCFPConfig, "pool_windows=(2, 3)") == {"pool_windows": (2, 3)}
    assert parsed(MSCFPConfig, "pool_windows=3") == {"pool_windows": (3,)}


def test_str_fields_take_the_text_as_written() -> None:
    assert parsed(NetVLADConfig, "backbone=none") == {"backbone": "none"}
    assert parsed(TripletRecipe, "train_from=") == {"train_from": ""}
    assert parsed(MSCFPConfig, "subvector_dim=256") == {"subvector_dim": 256}  # inherited and own fields alike
    assert parsed(MSCFPConfig, "num_clusters=8") == {"num_clusters": 8}


@pytest.mark.parametrize("pair", ["nope=1", "Num_clusters=1", "=5", " num_clusters=1"])
def test_unknown_field(pair: str) -> None:
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        parsed(NetVLADConfig, pair)


@pytest.mark.parametrize("pair", ["num_clusters", "whiten_dim", ""])
def test_missing_equals(pair: str) -> None:
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        parsed(NetVLADConfig, pair)


@pytest.mark.parametrize(("cls", "pair"), [
    (NetVLADConfig, "num_clusters=abc"), (NetVLADConfig, "num_clusters=1.5"), (NetVLADConfig, "num_clusters=true"),
    (NetVLADConfig, "num_clusters=none"), (NetVLADConfig, "num_clusters=[1, 2]"), (NetVLADConfig, "num_clusters="),
    (NetVLADConfig, "assignment_bias=1"), (NetVLADConfig, "assignment_bias=maybe"), (NetVLADConfig, "whiten_dim=1.5"),
    (NetVLADConfig, "whiten_dim=yes"),
    (TripletRecipe, "lr=abc"), (TripletRecipe, "lr=true"), (TripletRecipe, "lr=none"), (TripletRecipe, "lr=[1.0]"),
    (TripletRecipe, "lr_halving_epochs=0.5"), (TripletRecipe, "tuples_per_batch=false"),
    (MSCFPConfig, "pool_windows=none"),
])
def test_wrong_type_names_the_field(cls: type, pair: str) -> None:
    with pytest.raises(ValueError, match=pair.partition("=")[0]):
        parsed(cls, pair)


@pytest.mark.parametrize("pair", ["pool_windows=text", "pool_windows=[a, b]",
                                  "pool_windows=[2.5, 3]", "pool_windows=[true]"])
def test_tuple_of_ints_rejects_other_values(pair: str) -> None:
    """``tuple[int, ...]``: text or a list of non-ints is not a tuple of ints."""
    with pytest.raises(ValueError, match="pool_windows"):
        parsed(MSCFPConfig, pair)


# --- top_k_by_inner_product -------------------------------------------------------------------------------


def tied_data(n_q: int, n_db: int, dim: int, seed: int, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Small integer-valued descriptors: inner products are exact and tie very often."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1, 2, size=(n_q, dim)).astype(dtype), rng.integers(-1, 2, size=(n_db, dim)).astype(dtype)


def python_ranking(queries: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Independent: sort ids by (-similarity, id)."""
    rows = []
    for q in queries:
        similarity = [float(np.dot(q.astype(np.float64), x.astype(np.float64))) for x in db]
        rows.append(sorted(range(len(db)), key=lambda i, s=similarity: (-s[i], i)))
    return np.array(rows, dtype=np.int64)


def test_the_data_have_ties_at_the_cut() -> None:
    queries, db = tied_data(13, 17, 3, seed=0)
    similarity = queries @ db.T
    ranks = python_ranking(queries, db)
    sorted_similarity = np.take_along_axis(similarity, ranks, axis=1)
    assert (sorted_similarity[:, 4] == sorted_similarity[:, 5]).sum() >= 5  # many ties across k = 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk_bytes", [1 << 28, 1, 4 * 17 * 3, 4 * 17 * 5 + 3])
def test_rank_by_inner_product_breaks_ties_by_id(chunk_bytes: int, dtype: type) -> None:
    queries, db = tied_data(13, 17, 3, seed=0, dtype=dtype)
    ranks = rank_by_inner_product(queries, db, chunk_bytes=chunk_bytes)
    assert ranks.dtype == np.int64
    np.testing.assert_array_equal(ranks, python_ranking(queries, db))


@pytest.mark.parametrize("k", [1, 2, 5, 16, 17, 18, 100])
@pytest.mark.parametrize("chunk_bytes", [1 << 28, 1, 4 * 17 * 3, 4 * 17 * 5 + 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_is_the_full_ranking_cut_at_k(k: int, chunk_bytes: int, seed: int) -> None:
    queries, db = tied_data(13, 17, 3, seed=seed)
    top = top_k_by_inner_product(queries, db, k, chunk_bytes=chunk_bytes)
    assert top.dtype == np.int64
    assert top.shape == (13, min(k, 17))
    np.testing.assert_array_equal(top, rank_by_inner_product(queries, db)[:, :k])
    np.testing.assert_array_equal(top, python_ranking(queries, db)[:, :k])


def test_top_k_all_tied() -> None:
    queries, db = np.ones((4, 2), np.float32), np.ones((9, 2), np.float32)
    np.testing.assert_array_equal(top_k_by_inner_product(queries, db, 4, chunk_bytes=1), np.tile(np.arange(4), (4, 1)))


def test_top_k_on_real_valued_data() -> None:
    rng = np.random.default_rng(4)
    queries, db = rng.normal(size=(50, 16)).astype(np.float32), rng.normal(size=(300, 16)).astype(np.float32)
    top = top_k_by_inner_product(queries, db, 10, chunk_bytes=4 * 300 * 7)
    np.testing.assert_array_equal(top, rank_by_inner_product(queries, db)[:, :10])
    best = np.argmax(queries.astype(np.float64) @ db.T.astype(np.float64), axis=1)
    np.testing.assert_array_equal(top[:, 0], best)


# --- target_size and size_batches ---------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "max_size", "expected"), [
    ((100, 50), 200, (100, 50)),      # never enlarged
    ((200, 150), 200, (200, 150)),    # longest side equal to max: unchanged
    ((400, 300), 200, (200, 150)),
    ((300, 400), 200, (150, 200)),    # portrait: the height is the longest side
    ((1000, 337), 300, (300, 101)),   # 101.1 rounds down
    ((1000, 339), 300, (300, 102)),   # 101.7 rounds up (rounding, not truncation)
    ((1024, 683), 500, (500, 333)),   # 333.496
    ((1024, 685), 500, (500, 334)),   # 334.473
    ((1000, 1), 10, (10, 1)),         # never below one pixel
    ((5000, 3000), None, (5000, 3000)),
])
def test_target_size(size: tuple[int, int], max_size: int | None, expected: tuple[int, int]) -> None:
    assert tuple(target_size(size, max_size)) == expected


def test_target_size_keeps_the_aspect() -> None:
    for width, height in [(640, 480), (480, 640), (1234, 567), (33, 1000)]:
        new_width, new_height = target_size((width, height), 256)
        assert max(new_width, new_height) == 256
        assert abs(new_width / new_height - width / height) <= 1 / min(new_width, new_height)


def write_png(path: Path, size: tuple[int, int]) -> Path:
    width, height = size
    pixels = (np.arange(width * height * 3).reshape(height, width, 3) % 251).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_size_batches_group_by_output_size(tmp_path: Path) -> None:
    sizes = [(40, 30), (30, 40), (40, 30), (80, 60), (40, 30), (30, 40), (20, 20)]
    paths = [write_png(tmp_path / f"{i}.png", s) for i, s in enumerate(sizes)]
    protocol = ExtractionProtocol(max_size=40)
    # output sizes: (40,30) x4 (80x60 downscaled), (30,40) x2, (20,20) x1; groups in first-seen order
    assert size_batches(paths, protocol, None, 3) == [[0, 2, 3], [4], [1, 5], [6]]
    assert size_batches(paths, protocol, None, 1) == [[0], [2], [3], [4], [1], [5], [6]]
    assert size_batches(paths, protocol, None, 16) == [[0, 2, 3, 4], [1, 5], [6]]
    # no downscaling: 80x60 is a group of its own
    assert size_batches(paths, ExtractionProtocol(max_size=None), None, 16) == [[0, 2, 4], [1, 5], [3], [6]]
    for batch in size_batches(paths, protocol, None, 3):
        assert len({tuple(load_image(paths[i], protocol).shape) for i in batch}) == 1


def test_size_batches_crop_to_boxes(tmp_path: Path) -> None:
    paths = [write_png(tmp_path / f"{i}.png", (50, 40)) for i in range(5)]
    boxes = np.array([
        [0.0, 0.0, 10.0, 20.0],      # 10 x 20
        [5.0, 5.0, 35.0, 25.0],      # 30 x 20
        [0.4, 0.6, 10.5, 21.5],      # rounded (halves to even): [0, 1, 10, 22] -> 10 x 21
        [2.0, 3.0, 12.0, 23.0],      # 10 x 20
        [30.0, 20.0, 70.0, 60.0],    # beyond the image (padded): 40 x 40, downscaled to 30 x 30
    ])
    protocol = ExtractionProtocol(max_size=30)
    assert size_batches(paths, protocol, boxes, 4) == [[0, 3], [1], [2], [4]]
    for batch in size_batches(paths, protocol, boxes, 4):
        shapes = {tuple(load_image(paths[i], protocol, boxes[i]).shape) for i in batch}
        assert len(shapes) == 1
    assert tuple(load_image(paths[2], protocol, boxes[2]).shape) == (3, 21, 10)
    assert tuple(load_image(paths[4], protocol, boxes[4]).shape) == (3, 30, 30)
    # the boxes, not the images, decide: without boxes all five are one size
    assert size_batches(paths, protocol, None, 8) == [[0, 1, 2, 3, 4]]


def test_load_image_normalises_with_the_protocol(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.new("RGB", (6, 4), (255, 0, 51)).save(path)
    protocol = ExtractionProtocol(max_size=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.1))
    image = load_image(path, protocol)
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.0 - 0.5) / 0.25, (0.2 - 0.5) / 0.1]).view(3, 1, 1).expand(3, 4, 6)
    torch.testing.assert_close(image, expected)
