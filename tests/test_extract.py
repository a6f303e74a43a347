"""The extraction pipeline (DataLoader workers, size-grouped batches) gives the simple loop's numbers; bad
images and non-finite descriptors are detected and named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation import extract as extract_module
from benchmarks.evaluation.extract import (
    ExtractOptions,
    batches_by_size,
    channels_last,
    extract,
    extract_all,
    extract_one_by_one,
    load_image,
    normalise,
    output_sizes,
)
from methods.base import ExtractionProtocol
from tests.extract_worker import PROTOCOL, TinyEmbed, write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"), 14)


@pytest.fixture(scope="module")
def model() -> TinyEmbed:
    return TinyEmbed().eval()


def test_batches_group_equal_sizes_in_first_seen_order() -> None:
    sizes = np.array([[4, 3], [3, 4], [4, 3], [-1, -1], [4, 3], [3, 4], [2, 2]])
    assert batches_by_size(sizes, 2) == [[0, 2], [4], [1, 5], [3], [6]]
    assert batches_by_size(sizes, 8, np.array([1, 2, 4, 6])) == [[1], [2, 4], [6]]
    assert batches_by_size(sizes, 8, np.array([], dtype=np.int64)) == []


def test_output_sizes_read_headers_in_workers(images: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = [tuple(load_image(p, PROTOCOL).shape[:0:-1]) for p in images]  # (W, H)
    monkeypatch.setattr(extract_module, "HEADER_WORKERS_FROM", 1)
    for workers in (0, 1):
        assert [tuple(s) for s in output_sizes(images, PROTOCOL, num_workers=workers)] == expected
    assert {tuple(s) for s in expected} == {(40, 30), (30, 40), (48, 36), (48, 48)}  # 64x48 downscaled to 48


@pytest.mark.parametrize("workers", [0, 1])
def test_pipeline_equals_one_image_at_a_time(images: list[Path], model: TinyEmbed, workers: int) -> None:
    simple = extract_one_by_one(model, images, PROTOCOL)
    # batches of one through a plain function (contiguous batches): the simple loop's arithmetic, bit for bit, so
    # 8-bit batches normalised on the device are the images load_image gives
    alone = extract_all(lambda batch: model(batch), images, PROTOCOL, None,
                        ExtractOptions(batch_size=1, num_workers=workers))
    np.testing.assert_array_equal(alone.descriptors, simple)
    # the module in channels_last, batched: equal up to the float rounding of another convolution order
    for batch_size in (1, 4):
        batched = extract_all(model, images, PROTOCOL, None, ExtractOptions(batch_size=batch_size,
                                                                            num_workers=workers))
        np.testing.assert_allclose(batched.descriptors, simple, rtol=0, atol=2e-7)
    assert batched.skipped == () and batched.descriptors.dtype == np.float32
    assert np.allclose(np.linalg.norm(simple, axis=1), 1, atol=1e-6)


def test_pipeline_crops_to_boxes_like_the_simple_loop(images: list[Path], model: TinyEmbed) -> None:
    boxes = np.array([[2.0, 3.0, 22.0, 18.0], [0.4, 0.6, 10.5, 21.5]] * 7)
    simple = extract_one_by_one(model, images, PROTOCOL, boxes)
    np.testing.assert_allclose(extract(model, images, PROTOCOL, boxes, batch_size=8, num_workers=0), simple,
                               rtol=0, atol=2e-7)
    assert not np.allclose(simple, extract_one_by_one(model, images, PROTOCOL))


def _truncated(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])  # a valid header, half the data
    return target


def test_bad_images_fail_by_name_or_are_skipped(images: list[Path], model: TinyEmbed, tmp_path: Path) -> None:
    truncated = _truncated(images[3], tmp_path / "truncated.jpg")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 not a jpeg at all")
    for bad in (truncated, garbage):
        paths = [*images[:5], bad, *images[5:8]]
        with pytest.raises(InputError, match="on-bad-image skip") as error:
            extract_all(model, paths, PROTOCOL, None, ExtractOptions(num_workers=1))
        assert error.value.path == str(bad)
        kept = extract_all(model, paths, PROTOCOL, None, ExtractOptions(num_workers=1, on_bad_image="skip"))
        assert kept.skipped == (5,)
        assert not kept.descriptors[5].any()
        others = [i for i in range(len(paths)) if i != 5]
        np.testing.assert_allclose(kept.descriptors[others], extract_one_by_one(model, [paths[i] for i in others],
                                                                                PROTOCOL), rtol=0, atol=2e-7)


def test_non_finite_descriptors_name_the_model_and_image(images: list[Path], model: TinyEmbed) -> None:
    def broken(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch)
        out[batch[:, 0, 0, 0] == first_pixel] = float("nan")
        return out

    first_pixel = load_image(images[2], PROTOCOL)[0, 0, 0]
    options = ExtractOptions(num_workers=0, label="tiny weights t.broken", on_bad_image="skip")
    with pytest.raises(InputError, match=r"tiny weights t\.broken gave NaN or infinite descriptors") as error:
        extract_all(broken, images, PROTOCOL, None, options)
    assert str(images[2]) in str(error.value)


def test_options_refuse_an_unknown_bad_image_policy() -> None:
    with pytest.raises(ValueError, match="on_bad_image"):
        ExtractOptions(on_bad_image="ignore")


@pytest.mark.slow
def test_speed_extract_reports_the_rates_and_the_serial_ceiling(embedded_root: Path) -> None:
    args = ["speed", "extract", "--root", str(embedded_root), "--images", "6", "--repeat", "1", "--workers", "0",
            "--config", "feature_index=1", "--config", "num_clusters=2", "--json"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    figures = json.loads(done.output)
    assert figures["n_images"] == 6 and figures["image_sizes"] == ["128x96"] and figures["num_workers"] == 0
    assert set(figures["images_per_s"]) == {"forward", "pipeline", "one_by_one", "read"}
    assert figures["pipeline_over_forward"] > 0 and 0 < figures["serial_ceiling"] < 1
    assert {"torch", "cpus", "torch_threads"} <= figures["environment"].keys()


def test_normalise_is_the_float32_formula_for_every_value_and_moves_channels_first() -> None:
    protocol = ExtractionProtocol(max_size=None, scales=(1.0,))  # ImageNet's mean and std
    values = np.arange(256, dtype=np.uint8)
    pixels = torch.from_numpy(np.stack([values.reshape(16, 16), values.reshape(16, 16)[::-1], values[::-1]
                                         .reshape(16, 16)], axis=-1)[None].repeat(2, axis=0))  # (2, 16, 16, 3)
    out = normalise(pixels, protocol)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    for channel in range(3):
        plane = pixels[..., channel].numpy().astype(np.float32)
        expected = (plane / np.float32(255.0) - np.float32(protocol.mean[channel])) / np.float32(protocol.std[channel])
        np.testing.assert_array_equal(out[:, channel].numpy(), expected)
    assert out[0, 0, 0, 0] == np.float32(-0.485) / np.float32(0.229)
    np.testing.assert_array_equal(normalise(pixels[1], protocol).numpy(), out[1].numpy())


def test_channels_last_converts_a_module_for_the_block_and_puts_it_back() -> None:
    model = TinyEmbed()
    before = model.conv.weight.detach().clone()
    with channels_last(model) as module:
        assert module and model.conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not model.conv.weight.is_contiguous()
    assert model.conv.weight.is_contiguous() and torch.equal(model.conv.weight, before)
    with channels_last(lambda batch: batch) as module:
        assert not module


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_load_image_normalises_each_pixel_by_the_formula(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "image.png"  # lossless: the pixels read are the pixels written
    Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)).convert(mode).save(path)
    protocol = ExtractionProtocol(max_size=None, scales=(1.0,), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    with Image.open(path) as opened:
        pixels = np.asarray(opened.convert("RGB"), dtype=np.float32)
    expected = (pixels / np.float32(255.0) - np.asarray(protocol.mean, np.float32)) / np.asarray(protocol.std,
                                                                                                   np.float32)
    np.testing.assert_array_equal(load_image(path, protocol).numpy(), expected.transpose(2, 0, 1))


def test_extraction_shows_a_bar_of_every_image_in_memory_and_through_the_cache(
        images: list[Path], model: TinyEmbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.evaluation.cache import DescriptorCache

    bars: list[dict] = []

    class Bar:
        def __init__(self, **kwargs: object) -> None:
            bars.append({**kwargs, "done": 0})

        def __enter__(self) -> "Bar":
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int) -> None:
            bars[-1]["done"] += n

    monkeypatch.setattr(extract_module, "tqdm", Bar)
    options = ExtractOptions(batch_size=4, num_workers=0, label="tiny weights t")
    extract_all(model, images, PROTOCOL, None, options)
    cache = DescriptorCache(tmp_path / "c", {"n_images": 14, "dtype": "float32", "model": "tiny"}, chunk_rows=5)
    cache.fill(model, images, PROTOCOL, None, options)
    assert [(b["total"], b["done"], b["desc"], b["disable"]) for b in bars] == [
        (14, 14, "tiny weights t: extracting", None)] * 2  # None: shown on a terminal, not in a log file
