"""Faults of issue 19 that end in the right number or in kept data (the one-line errors of every command are in
tests/test_damaged_inputs.py): image modes read as the references read them, a decompression bomb skipped
under --on-bad-image skip, a full disk while unpacking or merging, a failed generation, an archive bomb, and
the training state bound to its run."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.core import archives
from benchmarks.core.acquire import AcquireOptions, acquire_files
from benchmarks.core.download import Retry
from benchmarks.core.errors import InputError
from benchmarks.evaluation.cache import DescriptorCache
from benchmarks.evaluation.extract import ExtractOptions, extract_all, extract_one_by_one, read_pixels
from benchmarks.training.common import TrainOptions, load_state, run_binding, save_state
from datasets import load_plugins
from datasets.base import ClassLabels, FileSpec, LoadedDataset
from methods.base import ExtractionProtocol
from methods.netvlad import NetVLADMethod
from tests.extract_worker import PROTOCOL, TinyEmbed, write_images
from tests.test_cache_integrity import chunks_only, key_of
from tests.test_damaged_inputs import TINY
from tests.test_datasets import tar_bytes

PLAIN = ExtractionProtocol(max_size=None)
RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_16_bit_greyscale_is_read_by_its_top_8_bits_not_as_white(tmp_path: Path) -> None:
    grey = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)  # 0 .. 65195
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    pixels = read_pixels(tmp_path / "g.png", PLAIN)
    assert pixels.shape == (24, 32, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 1], grey >> 8)  # as OpenCV's imread reads it; was all 255
    assert pixels.mean() == pytest.approx((grey >> 8).mean())


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGBA", "LA", "L", "1"])
def test_other_modes_are_read_as_pillow_converts_them(tmp_path: Path, mode: str) -> None:
    image = Image.fromarray(PIXELS).convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(0)  # fully transparent: the colour under the alpha is what the references read
    path = tmp_path / f"x.{'tiff' if mode == 'CMYK' else 'png'}"
    image.save(path)
    np.testing.assert_array_equal(read_pixels(path, PLAIN), np.asarray(Image.open(path).convert("RGB")))
    if mode in ("RGBA", "CMYK"):  # lossless: exactly the pixels saved
        np.testing.assert_array_equal(read_pixels(path, PLAIN), PIXELS)


def test_float_pixels_are_refused_naming_the_image(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(InputError, match="32-bit float.*convert the image to 8-bit RGB") as caught:
        read_pixels(tmp_path / "f.tiff", PLAIN)
    assert caught.value.path == str(tmp_path / "f.tiff")


def test_a_decompression_bomb_is_skipped_under_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = write_images(tmp_path / "images", 3)
    Image.new("L", (1000, 1000)).save(images[1], "JPEG")  # over twice the cap set below: Pillow refuses it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    model = TinyEmbed().eval()
    with pytest.raises(InputError, match="--on-bad-image skip") as caught:
        extract_all(model, images, PROTOCOL, None, ExtractOptions(num_workers=0))
    assert caught.value.path == str(images[1])
    skipped = extract_all(model, images, PROTOCOL, None, ExtractOptions(num_workers=0, on_bad_image="skip"))
    assert skipped.skipped == (1,)  # was: DecompressionBombError, a traceback whatever the option
    good = [images[0], images[2]]
    np.testing.assert_allclose(skipped.descriptors[[0, 2]], extract_one_by_one(model, good, PROTOCOL), atol=2e-7)
    assert not skipped.descriptors[1].any()


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading the file")
    path = write_images(tmp_path, 1)[0]
    path.chmod(0)
    with pytest.raises(InputError, match="cannot read image.*Permission denied") as caught:
        read_pixels(path, PLAIN)
    assert caught.value.path == str(path)


def test_a_full_disk_while_unpacking_keeps_the_verified_archive(server, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    body = tar_bytes({f"a/{i}.jpg": bytes([i]) * 1000 for i in range(5)})
    server.files["/demo/a.tgz"] = body
    spec = FileSpec("a.tgz", urls=(server.url + "/demo/a.tgz",), sha256=hashlib.sha256(body).hexdigest(),
                    extract_to="jpg")
    options = AcquireOptions(retry=Retry(attempts=1, backoff=0.0, timeout=5.0))
    real = tarfile.TarFile.makefile

    def full(self: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
        if member.name.endswith("3.jpg"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        real(self, member, target)

    monkeypatch.setattr(tarfile.TarFile, "makefile", full)
    with pytest.raises(InputError, match="cannot write: No space left on device; nothing was extracted and the "
                                         "archive is kept"):
        acquire_files(tmp_path, "demo", (spec,), options)
    assert (tmp_path / "a.tgz").read_bytes() == body  # was: reported as corrupt, and deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz"]  # no staging folder, no half target
    monkeypatch.setattr(tarfile.TarFile, "makefile", real)
    served = len(server.requests)
    acquire_files(tmp_path, "demo", (spec,), options)  # space freed: the kept archive is unpacked
    assert len(server.requests) == served and len(list((tmp_path / "jpg" / "a").iterdir())) == 5


def test_an_archive_bomb_is_refused_before_it_fills_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "bomb.tgz"
    archive.write_bytes(tar_bytes({"a.bin": bytes(1000), "zeros.bin": bytes(4 * 2**20)}))  # 4 MiB in ~4 KiB
    monkeypatch.setattr(archives, "EXPANSION_FLOOR", 2**20)
    with pytest.raises(InputError, match=r"expands beyond 1048576 bytes \(at member 'zeros.bin'\)"):
        archives.extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tgz"]
    monkeypatch.setattr(archives, "EXPANSION_FLOOR", 8 * 2**20)
    assert archives.extract(archive, tmp_path / "out") == 2  # within the cap: unpacked


def test_a_member_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tar_bytes({"a.bin": bytes(5000)}))
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: SimpleNamespace(free=4999))
    with pytest.raises(archives.ArchiveWriteError, match="does not fit in the free space"):
        archives.extract(archive, tmp_path / "out")
    assert archive.exists() and not (tmp_path / "out").exists()


def test_a_full_disk_while_merging_the_cache_is_one_error_not_sigbus(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    images = write_images(tmp_path / "images", 10)
    model = TinyEmbed().eval()
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(InputError, match="cannot write: No space left on device; the extracted chunks are kept"):
        cache._merge()
    assert not (cache.directory / ".descriptors.npy.tmp").exists()
    assert all(cache._chunk(c).exists() for c in range(cache.n_chunks))
    monkeypatch.undo()
    again = DescriptorCache(cache.directory, cache.key)
    out = again.fill(model, images, PROTOCOL, None, ExtractOptions(batch_size=2, num_workers=0))
    assert again.written == 0  # merged from the kept chunks, nothing extracted again
    np.testing.assert_allclose(out.descriptors, extract_one_by_one(model, images, PROTOCOL), atol=2e-7)


def test_a_cache_whose_merged_file_vanished_is_extracted_again(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images", 10)
    model = TinyEmbed().eval()
    cache = DescriptorCache(tmp_path / "c", key_of(images), chunk_rows=4)
    cache.fill(model, images, PROTOCOL, None, ExtractOptions(batch_size=2, num_workers=0))
    (cache.directory / "descriptors.npy").unlink()  # complete.json now points at nothing
    again = DescriptorCache(cache.directory, cache.key, chunk_rows=4)
    out = again.fill(model, images, PROTOCOL, None, ExtractOptions(batch_size=2, num_workers=0))
    assert again.written == 3
    np.testing.assert_allclose(out.descriptors, extract_one_by_one(model, images, PROTOCOL), atol=2e-7)


@pytest.mark.parametrize("record", ["{garbage", "[1, 2]", '{"key": {}}'])
def test_a_damaged_cache_record_is_written_again(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  record: str) -> None:
    images = write_images(tmp_path / "images", 10)
    model = TinyEmbed().eval()
    cache = chunks_only(tmp_path / "c", key_of(images), images, model)
    (cache.directory / "key.json").write_text(record)  # was: JSONDecodeError, TypeError or KeyError
    again = DescriptorCache(cache.directory, cache.key, chunk_rows=4)
    out = again.fill(model, images, PROTOCOL, None, ExtractOptions(batch_size=2, num_workers=0))
    assert "cache record, written again" in caplog.text and again.written == 0  # the chunks verified themselves
    np.testing.assert_allclose(out.descriptors, extract_one_by_one(model, images, PROTOCOL), atol=2e-7)


def test_a_failed_generation_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_plugins().get("synth_places")()

    def full(folder: Path) -> dict:
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "half.jpg").write_bytes(b"\xff\xd8")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "images" / "next.jpg"))

    monkeypatch.setattr(type(spec), "generate", lambda self, folder: full(folder))
    with pytest.raises(InputError, match="cannot write: No space left on device; the partial folder was removed"):
        spec.prepare(tmp_path, AcquireOptions())
    assert list(tmp_path.iterdir()) == []  # was: .synth_places.generating left behind, and a traceback


def test_a_training_state_is_bound_to_what_decides_the_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NetVLADMethod(TINY)
    images = tuple(tmp_path / f"{i}.jpg" for i in range(4))
    split = LoadedDataset(images[:3], images[3:], ClassLabels(np.zeros(3, np.int64)))
    recipe, options = NetVLADMethod.recipe, TrainOptions(steps=10, seed=0)
    bound = run_binding(model, split, recipe, options, scheduled_steps=False)
    assert run_binding(model, split, recipe, options, scheduled_steps=False) == bound
    assert run_binding(model, split, recipe, dataclasses.replace(options, steps=20), scheduled_steps=False) == bound
    changed = [run_binding(model, split, recipe, dataclasses.replace(options, seed=1), scheduled_steps=False),
               run_binding(model, split, recipe, dataclasses.replace(options, steps=20), scheduled_steps=True),
               run_binding(model, split, dataclasses.replace(recipe, lr=0.5), options, scheduled_steps=False),
               run_binding(model, LoadedDataset(images[:2], images[3:], split.ground_truth), recipe, options,
                           scheduled_steps=False),
               run_binding(NetVLADMethod(dataclasses.replace(TINY, num_clusters=5)), split, recipe, options,
                           scheduled_steps=False)]
    with torch.no_grad():
        model.vlad.centroids.add_(1.0)  # other starting weights (another --init)
    changed.append(run_binding(model, split, recipe, options, scheduled_steps=False))
    assert len({bound, *changed}) == 7
    state = tmp_path / "w.pt.state"
    save_state(state, {"step": 1, "binding": bound})
    assert load_state(state, 10, bound)["step"] == 1
    with pytest.raises(InputError, match="training state of another run .* or delete it to start afresh"):
        load_state(state, 10, changed[0])
