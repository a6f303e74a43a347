"""The descriptor cache: keyed by everything that changes a descriptor, written in chunks and resumed, read
memory-mapped, float16 on request, refusing another configuration's directory; evaluate uses it and records
skipped images."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation.cache import DescriptorCache
from benchmarks.evaluation.cache_key import cache_key
from benchmarks.evaluation.evaluate import _search_over_read
from benchmarks.evaluation.extract import ExtractOptions, extract_one_by_one
from benchmarks.evaluation.results import load_result
from benchmarks.evaluation.search import rank_by_inner_product
from methods.netvlad import NetVLADConfig, NetVLADMethod
from methods.weights import save_checkpoint
from tests.extract_worker import PROTOCOL, TinyEmbed, write_images

KEY = {"n_images": 10, "dtype": "float32", "model": "tiny"}
OPTIONS = ExtractOptions(batch_size=2, num_workers=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"), 10)


@pytest.fixture(scope="module")
def model() -> TinyEmbed:
    return TinyEmbed().eval()


def test_fill_then_read_memory_mapped(images: list[Path], model: TinyEmbed, tmp_path: Path) -> None:
    cache = DescriptorCache(tmp_path / "c", KEY, chunk_rows=4)
    first = cache.fill(model, images, PROTOCOL, None, OPTIONS)
    assert cache.written == 3 and cache.complete and not list((tmp_path / "c" / "chunks").glob("*.npz"))
    np.testing.assert_allclose(first.descriptors, extract_one_by_one(model, images, PROTOCOL), rtol=0, atol=2e-7)
    again = DescriptorCache(tmp_path / "c", KEY, chunk_rows=99)  # the first run fixed the chunk length
    second = again.fill(model, images, PROTOCOL, None, OPTIONS)
    assert again.written == 0 and again.chunk_rows == 4 and isinstance(second.descriptors, np.memmap)
    np.testing.assert_array_equal(second.descriptors, first.descriptors)


def test_an_interrupted_fill_resumes_with_the_same_numbers(images: list[Path], model: TinyEmbed,
                                                            tmp_path: Path) -> None:
    reference = DescriptorCache(tmp_path / "ref", KEY, chunk_rows=3).fill(model, images, PROTOCOL, None, OPTIONS)

    class DiesOnTheFourthBatch(torch.nn.Module):  # a module, as the model: the same layout, the same numbers
        def __init__(self) -> None:
            super().__init__()
            self.model, self.calls = model, 0

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 4 * len(PROTOCOL.scales):
                raise KeyboardInterrupt
            return self.model(batch)

    cache = DescriptorCache(tmp_path / "c", KEY, chunk_rows=3)
    with pytest.raises(KeyboardInterrupt):
        cache.fill(DiesOnTheFourthBatch(), images, PROTOCOL, None, OPTIONS)
    done = cache.chunks_done()
    assert 0 < done < cache.n_chunks and not cache.complete
    resumed = DescriptorCache(tmp_path / "c", KEY)
    out = resumed.fill(model, images, PROTOCOL, None, OPTIONS)
    assert resumed.written == cache.n_chunks - done
    np.testing.assert_array_equal(out.descriptors, reference.descriptors)


def test_a_directory_written_by_another_configuration_is_refused(images: list[Path], tmp_path: Path) -> None:
    DescriptorCache(tmp_path / "c", KEY)
    with pytest.raises(InputError, match=r"another configuration \(differing: dtype, model\)") as error:
        DescriptorCache(tmp_path / "c", {**KEY, "dtype": "float16", "model": "other"})
    assert error.value.path == str(tmp_path / "c" / "key.json")


def test_a_config_with_tuples_reopens_its_own_directory(images: list[Path], tmp_path: Path) -> None:
    key = cache_key("mscfp", {"pool_windows": (2, 3)}, "a" * 64, PROTOCOL, images, None, images[0].parent, "cpu")
    DescriptorCache(tmp_path / "c", key)
    DescriptorCache(tmp_path / "c", key)  # key.json reads (2, 3) back as [2, 3]: still the same configuration


def test_float16_storage(images: list[Path], model: TinyEmbed, tmp_path: Path) -> None:
    half = DescriptorCache(tmp_path / "c", {**KEY, "dtype": "float16"}).fill(model, images, PROTOCOL, None, OPTIONS)
    assert half.descriptors.dtype == np.float16
    np.testing.assert_allclose(half.descriptors.astype(np.float32), extract_one_by_one(model, images, PROTOCOL),
                               rtol=0, atol=5e-4)


def test_skipped_images_are_recorded_and_refused_under_fail(images: list[Path], model: TinyEmbed,
                                                             tmp_path: Path) -> None:
    paths = list(images)
    paths[6] = tmp_path / "broken.jpg"
    paths[6].write_bytes(images[6].read_bytes()[:200])
    skip = dataclasses.replace(OPTIONS, on_bad_image="skip")
    with pytest.raises(InputError) as error:
        DescriptorCache(tmp_path / "c", KEY, chunk_rows=4).fill(model, paths, PROTOCOL, None, OPTIONS)
    assert error.value.path == str(paths[6])
    out = DescriptorCache(tmp_path / "c", KEY).fill(model, paths, PROTOCOL, None, skip)
    assert out.skipped == (6,) and not np.asarray(out.descriptors[6]).any()
    with pytest.raises(InputError, match="left out 1 unreadable image"):
        DescriptorCache(tmp_path / "c", KEY).read(paths, "fail")


def test_a_damaged_chunk_is_extracted_again(images: list[Path], model: TinyEmbed, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    cache = DescriptorCache(tmp_path / "c", KEY, chunk_rows=4)
    (tmp_path / "c" / "chunks" / "000001.npz").write_bytes(b"PK\x03\x04 not really")
    out = cache.fill(model, images, PROTOCOL, None, OPTIONS)
    assert cache.written == 3 and "000001.npz: cache chunk does not unpack" in caplog.text
    np.testing.assert_allclose(out.descriptors, extract_one_by_one(model, images, PROTOCOL), rtol=0, atol=2e-7)


def test_the_key_covers_everything_that_changes_a_descriptor(images: list[Path], tmp_path: Path) -> None:
    def key(**changes: object) -> dict:
        args = {"method": "tiny", "config": {"k": 1}, "weights_sha256": "a" * 64, "protocol": PROTOCOL,
                "paths": images, "boxes": None, "data_root": images[0].parent, "device": "cpu", "dtype": "float32"}
        return cache_key(**{**args, **changes})

    base = key()
    copy = shutil.copytree(images[0].parent, tmp_path / "copy")  # a data root moved elsewhere: the same key
    assert base == key(paths=[copy / p.name for p in images], data_root=copy)
    changed = [key(method="other"), key(config={"k": 2}), key(weights_sha256="b" * 64),
               key(protocol=dataclasses.replace(PROTOCOL, max_size=64)), key(paths=images[::-1]),
               key(boxes=np.ones((len(images), 4))), key(device="cuda"), key(dtype="float16"),
               key(protocol=dataclasses.replace(PROTOCOL, scale_combination="sum_before_whitening")),
               key(protocol=dataclasses.replace(PROTOCOL, resize="square", query_scale=0.7, query_pad=256)),
               key(protocol=dataclasses.replace(PROTOCOL, resize_kernel="lanczos"))]
    assert len({json.dumps(c, sort_keys=True) for c in changed} | {json.dumps(base, sort_keys=True)}) == len(changed) + 1
    grown = tmp_path / images[0].name
    grown.write_bytes(images[0].read_bytes() + b"\0")
    assert key(paths=[grown, *images[1:]], data_root=tmp_path)["images_sha256"] != base["images_sha256"]
    with pytest.raises(InputError, match="cache dtype"):
        key(dtype="int8")


def test_skipped_database_images_rank_last() -> None:
    db = np.eye(4, dtype=np.float32)
    queries = np.array([[0.1, 0.9, 0.2, 0.0], [0.0, 0.5, 0.0, 0.4]], dtype=np.float32)
    np.testing.assert_array_equal(_search_over_read(db, (1,), None).top_k(queries, 4), [[2, 0, 3, 1], [3, 0, 2, 1]])
    np.testing.assert_array_equal(_search_over_read(db, (1, 2), None).top_k(queries, 1), [[0], [3]])
    np.testing.assert_array_equal(_search_over_read(db, (1, 2), None).top_k(queries, 3), [[0, 3, 1], [3, 0, 1]])
    np.testing.assert_array_equal(_search_over_read(db, (), None).top_k(queries, 4), rank_by_inner_product(queries, db))


@pytest.fixture(scope="module")
def tiny_netvlad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = NetVLADMethod(NetVLADConfig(backbone="resnet18", feature_index=2, drop_final_relu=False, num_clusters=4,
                                        whiten_dim=None))
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, model, "resnet18.tiny", {})
    return path


def _evaluate(root: Path, weights: Path, results: Path, *extra: str) -> tuple[int, str]:
    args = ["evaluate", "--method", "netvlad", "--weights", str(weights), "--dataset", "synth_landmarks", "--root",
            str(root), "--results", str(results), "--batch-size", "8", "--allow-dirty", *extra]
    done = CliRunner().invoke(cli, args)
    return done.exit_code, done.output


@pytest.mark.slow
def test_evaluate_through_the_cache_and_with_skipped_images(embedded_root: Path, tiny_netvlad: Path,
                                                            tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(embedded_root / "synth_landmarks", root / "synth_landmarks")
    runs = {}
    for name, extra in (("cold", ()), ("warm", ()), ("none", ("--no-cache",)), ("half", ("--cache-dtype", "float16"))):
        code, output = _evaluate(root, tiny_netvlad, tmp_path / name, *extra)
        assert code == 0, output
        runs[name] = load_result(tmp_path / name / "synth_landmarks" / "netvlad" / "resnet18.tiny.json")
    caches = list((root / "cache" / "descriptors").iterdir())
    assert len(caches) == 4  # database and queries, in float32 and float16
    assert runs["warm"].provenance.descriptor_sha256 == runs["cold"].provenance.descriptor_sha256
    for name in ("warm", "none"):
        assert runs[name].metrics == pytest.approx(runs["cold"].metrics, abs=1e-6)
    assert runs["half"].config["descriptor_storage"] == "float16" and "descriptor_storage" not in runs["cold"].config
    assert runs["half"].metrics == pytest.approx(runs["cold"].metrics, abs=0.02)

    db_image = sorted((root / "synth_landmarks" / "jpg").glob("*.jpg"))[0]
    db_image.write_bytes(db_image.read_bytes()[:300])  # truncated: the cache key changes with the size
    code, output = _evaluate(root, tiny_netvlad, tmp_path / "fail")
    assert code == 2 and str(db_image) in output and "--on-bad-image skip" in output
    code, output = _evaluate(root, tiny_netvlad, tmp_path / "skip", "--on-bad-image", "skip")
    assert code == 0, output
    skipped = load_result(tmp_path / "skip" / "synth_landmarks" / "netvlad" / "resnet18.tiny.json")
    assert skipped.config["skipped_images"] == {"database": [str(db_image.relative_to(root))], "queries": []}
    assert [note for note in skipped.notes if "--on-bad-image skip" in note and "rank last" in note]
    assert json.loads((caches[0] / "key.json").read_text())["key"]["method"] == "netvlad"


def test_a_merged_file_that_disagrees_with_its_record_is_refused(images: list[Path], model: TinyEmbed,
                                                                 tmp_path: Path) -> None:
    cache = DescriptorCache(tmp_path / "c", KEY)
    cache.fill(model, images, PROTOCOL, None, OPTIONS)
    np.save(tmp_path / "c" / "descriptors.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(InputError, match=r"cache holds \(3, 16\) float32, its record says \[10, 16\]"):
        cache.read(images)
    (tmp_path / "c" / "descriptors.npy").unlink()
    with pytest.raises(InputError, match="damaged descriptor cache"):
        cache.read(images)
