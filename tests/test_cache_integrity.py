"""The descriptor cache trusts nothing it reads: each attack damages a stored chunk, the merged file or the
images under it, and the run ends with the right numbers (the damage extracted again, with a warning) or,
where nothing can be recovered, one error naming the file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.core import file_digests
from benchmarks.core.errors import InputError
from benchmarks.evaluation.cache import DescriptorCache
from benchmarks.evaluation.cache_chunks import array_sha256, chunk_identity, encode_chunk
from benchmarks.evaluation.cache_key import cache_key
from benchmarks.evaluation.extract import ExtractOptions, extract_one_by_one
from tests.extract_worker import PROTOCOL, TinyEmbed, write_images

OPTIONS = ExtractOptions(batch_size=2, num_workers=0)
N = 10


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"), N)


@pytest.fixture(scope="module")
def model() -> TinyEmbed:
    return TinyEmbed().eval()


@pytest.fixture(scope="module")
def reference(images: list[Path], model: TinyEmbed) -> np.ndarray:
    return extract_one_by_one(model, images, PROTOCOL)


def key_of(images: list[Path], boxes: np.ndarray | None = None, dtype: str = "float32") -> dict:
    return cache_key("tiny", {"k": 1}, "a" * 64, PROTOCOL, images, boxes, images[0].parent, "cpu", dtype)


def chunks_only(directory: Path, key: dict, images: list[Path], model: TinyEmbed,
                boxes: np.ndarray | None = None) -> DescriptorCache:
    """A cache with its 3 chunks of 4 rows written and not yet merged (as a killed run leaves it)."""
    cache = DescriptorCache(directory, key, chunk_rows=4)
    cache._extract_chunks(list(range(cache.n_chunks)), model, images, PROTOCOL, boxes, OPTIONS)
    return cache


def rewrite_chunk(cache: DescriptorCache, c: int, descriptors: np.ndarray) -> None:
    """Replace chunk ``c`` by ``descriptors`` with a valid identity and checksum (a forged, consistent chunk)."""
    identity = chunk_identity(cache.digest, 4 * c, len(descriptors))
    cache._chunk(c).write_bytes(encode_chunk(descriptors, np.zeros(0, np.int64), identity))


def refill(cache: DescriptorCache, images: list[Path], model: TinyEmbed, reference: np.ndarray,
           caplog: pytest.LogCaptureFixture, warning: str, rewritten: int, boxes: np.ndarray | None = None) -> None:
    """Fill ``cache`` again and check it recovers: the right numbers, ``rewritten`` chunks, the warning logged."""
    again = DescriptorCache(cache.directory, cache.key)
    out = again.fill(model, images, PROTOCOL, boxes, OPTIONS)
    np.testing.assert_allclose(out.descriptors, reference, rtol=0, atol=2e-7)
    assert again.written == rewritten
    assert warning in caplog.text


def test_flipped_bits_in_a_chunk(images: list[Path], model: TinyEmbed, reference: np.ndarray, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)
    data = bytearray(cache._chunk(1).read_bytes())
    offset = data.index(b"\x93NUMPY") + 200  # inside the first array's values (the zip stores it uncompressed)
    data[offset] ^= 0x10
    cache._chunk(1).write_bytes(bytes(data))
    refill(cache, images, model, reference, caplog, "000001.npz: cache chunk does not unpack (BadZipFile: Bad CRC-32",
           rewritten=1)


def test_flipped_bits_behind_a_valid_zip(images: list[Path], model: TinyEmbed, reference: np.ndarray,
                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)
    with np.load(cache._chunk(2)) as npz:
        fields = {name: npz[name] for name in npz.files}
    flipped = fields["descriptors"].view(np.uint32).copy()
    flipped[1, 5] ^= 1 << 20  # one bit of one value, repacked so the zip's own CRC holds
    np.savez(cache._chunk(2), **{**fields, "descriptors": flipped.view(np.float32)})
    refill(cache, images, model, reference, caplog, "000002.npz: cache chunk checksum mismatch", rewritten=1)


def test_a_chunk_written_for_another_crop_setting(images: list[Path], model: TinyEmbed, reference: np.ndarray,
                                                  tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    boxes = np.tile([2.0, 2.0, 20.0, 20.0], (N, 1))
    cropped = chunks_only(tmp_path / "cropped", key_of(images, boxes), images, model, boxes)
    whole = chunks_only(tmp_path / "whole", key_of(images), images, model)
    shutil.copy(cropped._chunk(2), whole._chunk(2))  # same rows, same shape: only the identity tells
    refill(whole, images, model, reference, caplog, f"000002.npz: cache chunk describes {cropped.digest}:rows 8-10",
           rewritten=1)


def test_nan_rows_in_a_consistent_chunk(images: list[Path], model: TinyEmbed, reference: np.ndarray,
                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)
    poisoned = reference[:4].copy()
    poisoned[3] = np.nan
    rewrite_chunk(cache, 0, poisoned)
    refill(cache, images, model, reference, caplog, "000000.npz: cache chunk holds NaN", rewritten=1)


def test_a_chunk_of_another_dtype(images: list[Path], model: TinyEmbed, reference: np.ndarray, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)
    rewrite_chunk(cache, 1, reference[4:8].astype(np.float16))
    refill(cache, images, model, reference, caplog, "cache chunk holds (4, 16) float16, not (4, D) float32",
           rewritten=1)


def test_a_consistent_chunk_of_another_width_is_refused(images: list[Path], model: TinyEmbed,
                                                        tmp_path: Path) -> None:
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)
    rewrite_chunk(cache, 1, np.ones((4, 8), np.float32))  # a width no other chunk has: no way to tell who is right
    with pytest.raises(InputError, match=r"cache chunks of different widths \[8, 16\]; delete the directory") as error:
        DescriptorCache(cache.directory, cache.key).fill(model, images, PROTOCOL, None, OPTIONS)
    assert error.value.path == str(cache.directory)


def test_flipped_bits_in_the_merged_file(images: list[Path], model: TinyEmbed, reference: np.ndarray,
                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = DescriptorCache(tmp_path / "c", key_of(images), chunk_rows=4)
    cache.fill(model, images, PROTOCOL, None, OPTIONS)
    merged = tmp_path / "c" / "descriptors.npy"
    data = bytearray(merged.read_bytes())
    data[-7] ^= 0x01
    merged.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match the sha256 complete.json records"):
        DescriptorCache(cache.directory, cache.key).read(images)
    refill(cache, images, model, reference, caplog, "does not match the sha256", rewritten=3)


def test_nan_in_a_merged_file_whose_record_was_rewritten(images: list[Path], model: TinyEmbed,
                                                         reference: np.ndarray, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    cache = DescriptorCache(tmp_path / "c", key_of(images), chunk_rows=4)
    cache.fill(model, images, PROTOCOL, None, OPTIONS)
    poisoned = reference.copy()
    poisoned[5, 3] = np.nan
    np.save(tmp_path / "c" / "descriptors.npy", poisoned)
    record = json.loads((tmp_path / "c" / "complete.json").read_text())
    record["sha256"] = array_sha256(poisoned)[0]
    (tmp_path / "c" / "complete.json").write_text(json.dumps(record))
    refill(cache, images, model, reference, caplog, "descriptors.npy holds NaN or infinite values", rewritten=3)


def test_an_image_replaced_by_another_of_the_same_size(model: TinyEmbed, tmp_path: Path) -> None:
    images = write_images(tmp_path / "images", N)
    before = key_of(images)
    first = DescriptorCache.under(tmp_path, before).fill(model, images, PROTOCOL, None, OPTIONS)
    replacement = write_images(tmp_path / "other", N, seed=1)
    same_size = next(p for p in replacement if p.stat().st_size == images[3].stat().st_size) \
        if any(p.stat().st_size == images[3].stat().st_size for p in replacement) else None
    data = bytearray(images[3].read_bytes() if same_size is None else same_size.read_bytes())
    if same_size is None:  # no natural twin: change pixels' bytes in place, keeping the size
        data[-40] ^= 0xFF
    assert len(data) == images[3].stat().st_size
    images[3].write_bytes(bytes(data))
    after = key_of(images)
    assert after["images_sha256"] != before["images_sha256"]
    second = DescriptorCache.under(tmp_path, after).fill(model, images, PROTOCOL, None, OPTIONS)
    np.testing.assert_allclose(second.descriptors, extract_one_by_one(model, images, PROTOCOL), rtol=0, atol=2e-7)
    assert not np.allclose(second.descriptors[3], first.descriptors[3])
    np.testing.assert_array_equal(second.descriptors[:3], first.descriptors[:3])


def test_file_digests_are_remembered_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [tmp_path / f"{i}.bin" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 100)
    memo = tmp_path / "memo.sqlite"
    first = list(file_digests.file_digests([*files, tmp_path / "absent"], memo))
    assert first[3] == file_digests.MISSING and len(set(first[:3])) == 3
    assert list(file_digests.file_digests([*files, tmp_path / "absent"], None, block=2)) == first  # blocks
    hashed: list[Path] = []
    real = file_digests.sha256_file
    monkeypatch.setattr(file_digests, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert list(file_digests.file_digests(files, memo)) == first[:3] and hashed == []
    files[1].write_bytes(bytes([9]) * 100)  # same size; mtime and ctime move
    again = list(file_digests.file_digests(files, memo))
    assert hashed == [files[1]] and again[1] == real(files[1]) != first[1] and again[0] == first[0]
