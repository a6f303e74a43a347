"""gldv2 on loopback: the clean list, md5 files and plain-tar archives in the S3 layout; a subset of archives,
md5 verification, resuming with the rest, and the clean images' labels."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.acquire import LOCK_NAME, AcquireOptions, parse_archive_ranges
from benchmarks.core.errors import InputError
from datasets.gldv2 import Gldv2, gldv2_files, read_clean_list, read_md5
from tests.test_datasets import NO_WAIT, tiny_jpeg

A, B, C, D, E, F = (f"{k:x}" * 3 + f"{k:013x}" for k in (10, 11, 12, 13, 14, 15))  # 16 hex digits each
CLEAN = f"landmark_id,images\n7,{A} {B} {C}\n42,{D} {E}\n"


class TinyGldv2(Gldv2):
    n_archives = 2
    expected_counts = (5, 2)
    files = gldv2_files(2)


def plain_tar(ids) -> bytes:
    """images_NNN.tar's layout: an uncompressed tar of a/b/c/<id>.jpg."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for image_id in ids:
            content = tiny_jpeg()
            info = tarfile.TarInfo(f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def serve(server, archives: dict[int, bytes]) -> None:
    server.files["/m/gldv2/metadata/train_clean.csv"] = CLEAN.encode()
    for i, content in archives.items():
        server.files[f"/m/gldv2/train/images_{i:03d}.tar"] = content
        md5 = hashlib.md5(content).hexdigest()
        server.files[f"/m/gldv2/md5sum/train/md5.images_{i:03d}.txt"] = f"{md5}  images_{i:03d}.tar\n".encode()


def options(server, archives=None) -> AcquireOptions:
    return AcquireOptions(mirrors=(server.url + "/m",), mirror_only=True, retry=NO_WAIT, archives=archives)


def test_a_subset_of_archives_then_the_rest_md5_verified(server, tmp_path):
    serve(server, {0: plain_tar([A, B, D, F]), 1: plain_tar([C, E])})  # F: in the archive, not clean
    root, spec = tmp_path / "data", TinyGldv2()
    spec.prepare(root, options(server, archives=(0,)))
    assert sorted(path for path, _ in server.requests) == [
        "/m/gldv2/md5sum/train/md5.images_000.txt", "/m/gldv2/metadata/train_clean.csv",
        "/m/gldv2/train/images_000.tar"]
    loaded = spec.load(root, "train")
    assert loaded.ground_truth.image_ids == (A, B, D) and loaded.ground_truth.labels.tolist() == [7, 7, 42]
    assert loaded.db_paths[0] == root / "gldv2/train" / A[0] / A[1] / A[2] / f"{A}.jpg" and loaded.query_paths == ()
    assert spec.check(root) == ["1 of 2 archives not downloaded (e.g. train/images_001.tar)",
                                "2 of the 5 clean images are not on disk"]

    # The rest: the archive served differs from the bytes its md5 file describes; nothing is kept.
    server.files["/m/gldv2/train/images_001.tar"] = plain_tar([C])
    server.requests.clear()
    with pytest.raises(InputError, match="md5 [0-9a-f]{32} does not match the expected"):
        spec.prepare(root, options(server))
    assert not (root / "gldv2/train/images_001.tar").exists() and len(spec.load(root).db_paths) == 3
    assert "/m/gldv2/train/images_000.tar" not in [path for path, _ in server.requests]  # stamped: not again

    serve(server, {1: plain_tar([C, E])})
    spec.prepare(root, options(server))
    assert spec.check(root) == []
    loaded = spec.load(root)
    assert loaded.ground_truth.image_ids == (A, B, C, D, E) and loaded.ground_truth.labels.tolist() == [7, 7, 7, 42, 42]
    assert loaded.ground_truth.n_classes == 2
    lock = (root / "gldv2" / LOCK_NAME).read_text()
    assert "train_clean.csv" in lock and "images_000.tar" not in lock  # md5 published for the archives: no lock


def test_nothing_on_disk_and_out_of_range_archives_are_clear_errors(server, tmp_path):
    serve(server, {0: plain_tar([A]), 1: plain_tar([C])})
    spec = TinyGldv2()
    with pytest.raises(InputError, match="has archives 0-1, not 5"):
        spec.prepare(tmp_path, options(server, archives=(1, 5)))
    with pytest.raises(InputError, match="run `python -m benchmarks data download gldv2`"):
        spec.load(tmp_path)
    spec.prepare(tmp_path, options(server, archives=()))  # the clean list only
    with pytest.raises(InputError, match="none of the 5 clean images is on disk"):
        spec.load(tmp_path)
    assert spec.check(tmp_path)[0].endswith("none of the 5 clean images is on disk: run `python -m benchmarks data "
                                            "download gldv2` (--archives 0-9 for a part)")


def test_the_clean_list_and_md5_files_are_validated(tmp_path):
    path = tmp_path / "train_clean.csv"
    path.write_text(f"landmark_id,images\n7,{A} {B}\nx,{C}\n")
    with pytest.raises(InputError, match="line 3: expected 'landmark_id,<16-hex-digit ids") as error:
        read_clean_list(path)
    assert error.value.path == str(path)
    path.write_text(f"id,url,landmark_id\n7,{A}\n")
    with pytest.raises(InputError, match="expected the header 'landmark_id,images'"):
        read_clean_list(path)
    path.write_text(f"landmark_id,images\n7,{A} {A[:-1]}\n")
    with pytest.raises(InputError, match="line 2"):
        read_clean_list(path)

    md5 = tmp_path / "md5.images_003.txt"
    for good in ("d41d8cd98f00b204e9800998ecf8427e  images_003.tar\n", "d41d8cd98f00b204e9800998ecf8427e\n",
                 "d41d8cd98f00b204e9800998ecf8427e *train/images_003.tar\n"):
        md5.write_text(good)
        assert read_md5(md5, "train/images_003.tar") == "d41d8cd98f00b204e9800998ecf8427e"
    for bad in ("d41d8cd98f00b204e9800998ecf8427e  images_004.tar\n", "<html>Access denied</html>\n", ""):
        md5.write_text(bad)
        with pytest.raises(InputError, match="expected one line '<32 hex digits>  images_003.tar'") as error:
            read_md5(md5, "train/images_003.tar")
        assert error.value.path == str(md5)


def test_archive_ranges_and_the_cli_option(tmp_path):
    assert parse_archive_ranges("0-3, 7,2") == (0, 1, 2, 3, 7)
    for bad in ("3-1", "a", "1-", ""):
        with pytest.raises(InputError, match="--archives"):
            parse_archive_ranges(bad)
    result = CliRunner().invoke(cli, ["data", "download", "roxford5k", "--root", str(tmp_path), "--archives", "0"])
    assert result.exit_code == 2 and "roxford5k is not split into numbered archives" in result.output
    result = CliRunner().invoke(cli, ["data", "download", "gldv2", "--root", str(tmp_path), "--archives", "0-x"])
    assert result.exit_code == 2 and "--archives takes indices and ranges such as 0-9,42; got '0-x'" in result.output
