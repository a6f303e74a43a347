"""Dataset plugins end to end on loopback: archives in the real layouts, served on 127.0.0.1, downloaded with
``data download``, then ``data verify`` and ``load``; the 1M distractors' parallel per-archive resume; the
Pittsburgh / Tokyo image check; the query crop; the data root."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks.commands.main import cli
from benchmarks.core.acquire import LOCK_NAME, AcquireOptions, FileSpec
from benchmarks.core.data_root import data_root
from benchmarks.core.download import Retry
from benchmarks.core.errors import InputError
from datasets import load_plugins
from datasets.base import crop_query
from datasets.formats import PITTSBURGH_FIELDS, DbStruct, read_revisited_gnd, write_dbstruct
from datasets.pittsburgh import Pitts30k
from datasets.revisitop import Revisitop1M
from datasets.tokyo247 import Tokyo247
from tests.conftest import GND

NO_WAIT = Retry(attempts=1, backoff=0.0, timeout=5.0)


def tiny_jpeg(size=(4, 3)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(out, "JPEG")
    return out.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_roxford5k_downloads_verifies_and_is_held_to_its_lock(server, tmp_path):
    names = read_revisited_gnd(GND["roxford5k"])
    jpeg = tiny_jpeg()
    archive = tar_bytes({f"oxbuild_images/{n}.jpg": jpeg for n in names.db_names + names.query_names})
    server.files["/mirror/roxford5k/gnd_roxford5k.pkl"] = GND["roxford5k"].read_bytes()
    server.files["/mirror/roxford5k/oxbuild_images-v1.tgz"] = archive
    root = tmp_path / "data"

    code, out = run("data", "download", "roxford5k", "--root", root, "--mirror", server.url + "/mirror")
    assert code == 0, out
    folder = root / "roxford5k"
    assert sorted(p.name for p in folder.iterdir()) == [".acquired", LOCK_NAME, "gnd_roxford5k.pkl", "jpg"]
    assert len(list((folder / "jpg").iterdir())) == 4993 + 70  # flattened, the archive deleted after unpacking
    lock = json.loads((folder / LOCK_NAME).read_text())
    assert list(lock) == ["oxbuild_images-v1.tgz"]  # the gnd's checksum is published, the archive's is not
    assert run("data", "verify", "roxford5k", "--root", root) == (0, "roxford5k: sound\n")

    loaded = load_plugins().get("roxford5k")().load(root)
    assert loaded.db_paths[0] == folder / "jpg" / f"{names.db_names[0]}.jpg" and len(loaded.query_paths) == 70

    served = len(server.requests)
    assert run("data", "download", "roxford5k", "--root", root, "--mirror", server.url + "/mirror")[0] == 0
    assert len(server.requests) == served  # everything stamped: nothing fetched again

    # The server's archive changes: a fresh download is held to the checksum locked the first time.
    server.files["/mirror/roxford5k/oxbuild_images-v1.tgz"] = tar_bytes({"other.jpg": jpeg})
    for stamp in (folder / ".acquired").glob("oxbuild*"):
        stamp.unlink()
    code, out = run("data", "download", "roxford5k", "--root", root, "--mirror", server.url + "/mirror",
                    "--mirror-only")
    assert code == 2 and "does not match the expected" in out and LOCK_NAME in out
    assert not (folder / "oxbuild_images-v1.tgz").exists()


def test_verify_reports_each_problem(tmp_path, server):
    server.files["/m/roxford5k/gnd_roxford5k.pkl"] = GND["roxford5k"].read_bytes()
    first = read_revisited_gnd(GND["roxford5k"]).db_names[0]
    server.files["/m/roxford5k/oxbuild_images-v1.tgz"] = tar_bytes({f"{first}.jpg": b"not a jpeg"})
    root = tmp_path / "data"
    assert run("data", "download", "roxford5k", "--root", root, "--mirror", server.url + "/m")[0] == 0
    code, out = run("data", "verify", "roxford5k", "--root", root)
    lines = out.splitlines()
    assert code == 1 and lines[-1] == "roxford5k: 42 problem(s)"  # 20 + 1 lines for each kind
    assert lines[0] == f"problem: missing or unreadable database image: {root}/roxford5k/jpg/{first}.jpg"
    assert "problem: ... and 4973 more database images" in lines and "problem: ... and 50 more query images" in lines


def test_rparis6k_flattens_its_per_landmark_folders(server, tmp_path):
    names = read_revisited_gnd(GND["rparis6k"])
    every = names.db_names + names.query_names
    jpeg = tiny_jpeg()
    for part, half in ((1, every[: len(every) // 2]), (2, every[len(every) // 2:])):
        members = {f"paris/{n.split('_')[1]}/{n}.jpg": jpeg for n in half}
        server.files[f"/m/rparis6k/paris_{part}-v1.tgz"] = tar_bytes(members)
    server.files["/m/rparis6k/gnd_rparis6k.pkl"] = GND["rparis6k"].read_bytes()
    root = tmp_path / "data"
    spec = load_plugins().get("rparis6k")()
    spec.prepare(root, AcquireOptions(mirrors=(server.url + "/m",), jobs=2, retry=NO_WAIT))
    assert spec.check(root) == []
    assert (root / "rparis6k/jpg/paris_defense_000605.jpg").exists()


class TinyR1M(Revisitop1M):
    """The distractor set's logic on 5 archives of 3 images served by the test."""

    expected_images = 15
    files = ()


def tiny_r1m(server) -> TinyR1M:
    jpeg = tiny_jpeg()
    names = []
    files = [FileSpec("revisitop1m.txt", urls=(server.url + "/r1m/revisitop1m.txt",))]
    for i in range(1, 6):
        members = {f"{i}/{k}/img_{i}_{k}.jpg": jpeg for k in range(3)}
        names += members
        server.files[f"/r1m/jpg/revisitop1m.{i}.tar.gz"] = tar_bytes(members)
        files.append(FileSpec(f"revisitop1m.{i}.tar.gz", urls=(server.url + f"/r1m/jpg/revisitop1m.{i}.tar.gz",),
                              extract_to="jpg"))
    server.files["/r1m/revisitop1m.txt"] = "\n".join(names).encode() + b"\n"
    spec = TinyR1M()
    spec.files = tuple(files)
    return spec


def test_distractors_download_in_parallel_and_resume_per_archive(server, tmp_path):
    spec = tiny_r1m(server)
    server.fail["/r1m/jpg/revisitop1m.4.tar.gz"] = 503
    root = tmp_path / "data"
    with pytest.raises(InputError, match=r"1 of 6 files failed \(5 done and kept"):
        spec.prepare(root, AcquireOptions(jobs=3, retry=NO_WAIT))
    assert sorted(p.name for p in (root / "revisitop1m/jpg").iterdir()) == ["1", "2", "3", "5"]

    del server.fail["/r1m/jpg/revisitop1m.4.tar.gz"]
    server.requests.clear()
    spec.prepare(root, AcquireOptions(jobs=3, retry=NO_WAIT))
    assert [path for path, _ in server.requests] == ["/r1m/jpg/revisitop1m.4.tar.gz"]  # only the missing one
    assert spec.check(root) == []
    loaded = spec.load(root)
    assert len(loaded.db_paths) == 15 and loaded.ground_truth.n_queries == 0
    assert spec.check(root.parent / "elsewhere")[0].endswith("run `python -m benchmarks data download revisitop1m`")


def test_plus_1m_appends_the_distractors_after_the_dataset(monkeypatch, server, tmp_path):
    import datasets.revisitop as revisitop

    spec = tiny_r1m(server)
    monkeypatch.setattr(revisitop, "Revisitop1M", lambda: spec)
    server.files["/m/roxford5k/gnd_roxford5k.pkl"] = GND["roxford5k"].read_bytes()
    server.files["/m/roxford5k/oxbuild_images-v1.tgz"] = tar_bytes({"x.jpg": tiny_jpeg()})
    root = tmp_path / "data"
    plus = load_plugins().get("roxford5k+1m")()
    plus.prepare(root, AcquireOptions(mirrors=(server.url + "/m",), retry=NO_WAIT))
    loaded = plus.load(root)
    gnd = loaded.ground_truth
    assert gnd.n_db == 4993 + 15 and len(loaded.db_paths) == gnd.n_db == len(gnd.db_names)
    assert loaded.db_paths[4993] == root / "revisitop1m/jpg/1/0/img_1_0.jpg"
    assert gnd.easy[0].tolist() == read_revisited_gnd(GND["roxford5k"]).easy[0].tolist()


def netvlad_tar(tmp_path, structs: dict[str, DbStruct]) -> bytes:
    """netvlad_v100_datasets.tar.gz's layout: datasets/<name>.mat (Pittsburgh's field order)."""
    members = {}
    for name, db in structs.items():
        write_dbstruct(tmp_path / name, db, PITTSBURGH_FIELDS)
        members[f"datasets/{name}"] = (tmp_path / name).read_bytes()
    return tar_bytes(members)


def route(which: str, n_db: int, n_q: int, db_names, q_names) -> DbStruct:
    east = 585_000 + 10.0 * np.arange(n_db)
    utm_db = np.stack([east, np.full(n_db, 4_477_000.0)], 1)
    return DbStruct(which, tuple(db_names), utm_db, tuple(q_names), utm_db[:n_q] + 3.0, 25.0)


def pitts_structs(split_sizes):
    return {f"pitts30k_{split}.mat": route(split, n_db, n_q, [f"00{i % 2}/{split}{i:06d}_pitch1_yaw1.jpg"
                                                               for i in range(n_db)],
                                           [f"000/{split}{i:06d}_pitch1_yaw2.jpg" for i in range(n_q)])
            for split, (n_db, n_q) in split_sizes.items()}


class TinyPitts30k(Pitts30k):
    expected_counts = {"test": (6, 2), "train": (4, 2), "val": (4, 1)}


def pittsburgh_images(images, structs) -> None:
    """Every image the structs name, in the NetVLAD code's layout: ``images/`` and ``queries/``."""
    jpeg = tiny_jpeg()
    for db in structs.values():
        for folder, names in (("images", db.db_image_names), ("queries", db.query_image_names)):
            for name in names:
                (images / folder / name).parent.mkdir(parents=True, exist_ok=True)
                (images / folder / name).write_bytes(jpeg)


def test_pittsburgh_fetches_the_structs_then_lists_exactly_the_missing_images(server, tmp_path):
    structs = pitts_structs(TinyPitts30k.expected_counts)
    server.files["/m/pitts30k/netvlad_v100_datasets.tar.gz"] = netvlad_tar(tmp_path, structs)
    images = tmp_path / "Pittsburgh"
    pittsburgh_images(images, structs)
    lost = images / "queries" / structs["pitts30k_val.mat"].query_image_names[0]
    lost.unlink()
    root, spec = tmp_path / "data", TinyPitts30k()
    options = AcquireOptions(mirrors=(server.url + "/m",), retry=NO_WAIT, images=images)
    with pytest.raises(InputError, match="1 images it names are missing or unreadable") as error:
        spec.prepare(root, options)
    message = str(error.value)
    assert str(root / "pitts30k/images/queries/000/val000000_pitch1_yaw2.jpg") in message
    assert "given out on request" in message and "repttile" in message
    assert (root / "pitts30k/missing_images.txt").read_text().splitlines() == [
        str(root / "pitts30k/images/queries/000/val000000_pitch1_yaw2.jpg")]

    assert spec.check(root) == [f"1 images the .mat files name are missing or unreadable, e.g. "
                                f"{root}/pitts30k/images/queries/000/val000000_pitch1_yaw2.jpg"]

    lost.write_bytes(tiny_jpeg())
    spec.prepare(root, options)
    assert not (root / "pitts30k/missing_images.txt").exists() and spec.check(root) == []
    val = spec.load(root, "val")
    assert val.ground_truth.n_db == 4
    assert val.query_paths[0] == root / "pitts30k/images/queries/000/val000000_pitch1_yaw2.jpg"
    problems = Pitts30k().check(root)  # the real counts: each split is reported
    assert problems[0] == "test: 6 database images and 2 queries, expected 10000 and 6816"
    with pytest.raises(InputError, match="no split 'night'"):
        spec.load(root, "night")


class TinyTokyo(Tokyo247):
    expected_counts = {"test": (24, 3)}


def tokyo_layout(server, tmp_path):
    """Two panoramas of 12 ``.png`` cutouts the ``.mat`` names ``.jpg`` and 3 queries, the ``.mat`` served;
    returns the images' folder."""
    db_names = [f"03814/{p:05d}/pano{p}_012_{30 * k:03d}.jpg" for p in range(2) for k in range(12)]
    tokyo = route("test", 24, 3, db_names, [f"247query_v3/{i:05d}.jpg" for i in range(3)])
    server.files["/m/tokyo247/netvlad_v100_datasets.tar.gz"] = netvlad_tar(tmp_path, {"tokyo247.mat": tokyo})
    images = tmp_path / "Tokyo247"
    for name in db_names:
        path = images / "images" / name.replace(".jpg", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3)).save(path)
    for name in tokyo.query_image_names:
        (images / "query" / name).parent.mkdir(parents=True, exist_ok=True)
        (images / "query" / name).write_bytes(tiny_jpeg())
    return images


def test_tokyo247_finds_png_cutouts_named_jpg_and_counts_panoramas(server, tmp_path):
    images = tokyo_layout(server, tmp_path)
    root, spec = tmp_path / "data", TinyTokyo()
    spec.prepare(root, AcquireOptions(mirrors=(server.url + "/m",), retry=NO_WAIT, images=images))
    loaded = spec.load(root)
    assert loaded.db_paths[1] == root / "tokyo247/images/images/03814/00000/pano0_012_030.png"
    assert loaded.ground_truth.panorama_size == 12 and spec.check(root) == []


def test_query_crop_rounds_half_to_even_like_pillow():
    image = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3))
    box = (2.5, 3.5, 20.5, 10.49)
    assert crop_query(image, box).size == (18, 6)  # x 2..20 (2.5 -> 2, 20.5 -> 20), y 4..10 (3.5 -> 4)
    assert crop_query(image, box).tobytes() == image.crop((2, 4, 20, 10)).tobytes() == image.crop(box).tobytes()
    with pytest.raises(ValueError, match="empty query box"):
        crop_query(image, (5, 5, 5.4, 9))


def test_the_data_root_comes_from_the_environment_and_never_lies_in_the_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "elsewhere"))
    assert data_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("BENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache/image-retrieval-benchmarks"
    code, out = run("data", "info", "roxford5k", "--root", "results/somewhere")
    assert code == 2 and "data must not live inside the repository" in out
