"""oxford5k, paris6k and holidays on loopback: tiny archives in the real layouts and file-name patterns, served
on 127.0.0.1, downloaded, loaded, and scored with the original protocol on hand-made rankings whose mAP is
computed by hand; bad ground-truth files raise InputError naming the file."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from benchmarks.core.acquire import LOCK_NAME, AcquireOptions
from benchmarks.core.errors import InputError
from benchmarks.evaluation.metrics import oxford_scores
from datasets import load_plugins
from datasets.formats import read_oxford_gt_files
from datasets.holidays import Holidays, HolidaysUnrotated, holidays_ground_truth, read_image_list
from datasets.oxford_paris import Oxford5k, Paris6k
from tests.test_datasets import NO_WAIT, tar_bytes, tiny_jpeg

OXFORD_IMAGES = ("all_souls_000013", "all_souls_000026", "ashmolean_000000", "ashmolean_000007", "balliol_000051",
                 "christ_church_000179")
OXFORD_GT = {  # gt_files_170407.tgz's layout: flat text files, queries named with Oxford's oxc1_ prefix
    "all_souls_1_query.txt": "oxc1_all_souls_000013 136.5 34.1 648.5 955.7\n",
    "all_souls_1_good.txt": "all_souls_000013\nall_souls_000026\n",
    "all_souls_1_ok.txt": "ashmolean_000007\n",
    "all_souls_1_junk.txt": "balliol_000051\n",
    "ashmolean_2_query.txt": "oxc1_ashmolean_000000 10.0 20.0 30.0 40.0\n",
    "ashmolean_2_good.txt": "ashmolean_000007\n",
    "ashmolean_2_ok.txt": "",
    "ashmolean_2_junk.txt": "",
}


class TinyOxford(Oxford5k):
    expected_counts = (6, 2)


def serve(server, dataset: str, files: dict[str, bytes]) -> AcquireOptions:
    for name, content in files.items():
        server.files[f"/m/{dataset}/{name}"] = content
    return AcquireOptions(mirrors=(server.url + "/m",), mirror_only=True, retry=NO_WAIT)


def text_tar(files: dict[str, str]) -> bytes:
    return tar_bytes({name: text.encode() for name, text in files.items()})


def serve_oxford(server) -> AcquireOptions:
    images = tar_bytes({f"{n}.jpg": tiny_jpeg() for n in OXFORD_IMAGES})
    return serve(server, "oxford5k", {"oxbuild_images-v1.tgz": images, "gt_files_170407.tgz": text_tar(OXFORD_GT)})


def test_oxford5k_downloads_loads_and_scores_the_original_protocol(server, tmp_path):
    root, spec = tmp_path / "data", TinyOxford()
    spec.prepare(root, serve_oxford(server))
    assert sorted(p.name for p in (root / "oxford5k").iterdir()) == [".acquired", LOCK_NAME, "gt", "jpg"]
    assert spec.check(root) == []
    assert Oxford5k().check(root)[:2] == ["database images in jpg/: 6, expected 5063", "queries in gt/: 2, expected 55"]

    loaded = spec.load(root)
    gnd = loaded.ground_truth
    assert gnd.db_names == OXFORD_IMAGES and gnd.query_names == ("all_souls_000013", "ashmolean_000000")
    assert loaded.query_paths == (loaded.db_paths[0], loaded.db_paths[2])  # queries stay in the database
    assert [p.tolist() for p in gnd.positives] == [[0, 1, 3], [3]]  # good + ok
    assert [j.tolist() for j in gnd.junk] == [[4], []]
    assert gnd.query_boxes.tolist() == [[136.5, 34.1, 648.5, 955.7], [10, 20, 30, 40]]

    # Query 1: junk 4 leaves the ranking; positives then sit at 0, 2, 4: AP = (1 + 1 + 1/2 + 2/3 + 2/4 + 3/5) / 6.
    # Query 2: its one positive second: AP = (0/1 + 1/2) / 2.
    ranks = np.array([[4, 0, 5, 1, 2, 3], [2, 3, 0, 1, 4, 5]])
    scores = oxford_scores(ranks, gnd.positives, gnd.junk, gnd.n_db)
    assert scores.ap.tolist() == pytest.approx([32 / 45, 1 / 4])
    assert scores.map == pytest.approx((32 / 45 + 1 / 4) / 2)


class TinyParis(Paris6k):
    expected_counts = (4, 1)


def serve_paris(server) -> AcquireOptions:
    """paris_N-v1.tgz: one folder per landmark, with one of the corrupt images; Paris queries have no prefix."""
    jpeg, broken = tiny_jpeg(), b"<html><head><title>302 Found</title></head></html>"
    return serve(server, "paris6k", {
        "paris_1-v1.tgz": tar_bytes({"paris/defense/paris_defense_000000.jpg": jpeg,
                                     "paris/defense/paris_defense_000012.jpg": jpeg,
                                     "paris/louvre/paris_louvre_000136.jpg": broken}),
        "paris_2-v1.tgz": tar_bytes({"paris/eiffel/paris_eiffel_000001.jpg": jpeg,
                                     "paris/general/paris_general_002985.jpg": jpeg}),
        "paris_120310.tgz": text_tar({"defense_1_query.txt": "paris_defense_000000 1 2 30 40\n",
                                      "defense_1_good.txt": "paris_defense_000012\nparis_louvre_000136\n",
                                      "defense_1_ok.txt": "paris_defense_000000\n",
                                      "defense_1_junk.txt": "paris_eiffel_000001\n"})})


def test_paris6k_leaves_the_corrupt_images_out_of_the_database_and_the_lists(server, tmp_path):
    root, spec = tmp_path / "data", TinyParis()
    spec.prepare(root, serve_paris(server))
    assert (root / "paris6k/jpg/paris_louvre_000136.jpg").exists()  # in the archive, flattened like the others
    assert spec.check(root) == []  # left out, so not reported as unreadable
    gnd = spec.load(root).ground_truth
    assert gnd.db_names == ("paris_defense_000000", "paris_defense_000012", "paris_eiffel_000001",
                            "paris_general_002985")
    assert gnd.query_names == ("paris_defense_000000",) and gnd.positives[0].tolist() == [0, 1]
    assert gnd.junk[0].tolist() == [2]


def write_gt(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


@pytest.mark.parametrize(("change", "problem", "named"), [
    ({"all_souls_1_junk.txt": None}, "missing ground-truth file", "all_souls_1_junk.txt"),
    ({"ashmolean_2_query.txt": "oxc1_ashmolean_000000 10 20 30\n"}, "line 1: expected 'image x1 y1 x2 y2'",
     "ashmolean_2_query.txt"),
    ({"ashmolean_2_query.txt": "oxc1_ashmolean_000000 30 20 10 40\n"}, "x1 < x2", "ashmolean_2_query.txt"),
    ({"all_souls_1_ok.txt": "ashmolean_000007\nmagdalen_000078\n"},
     "line 2: image 'magdalen_000078' is not among the 6 database images", "all_souls_1_ok.txt"),
    ({"all_souls_1_good.txt": "all_souls_000013 all_souls_000026\n"}, "line 1: expected one image name",
     "all_souls_1_good.txt"),
    ({"ashmolean_2_query.txt": "oxc1_ashmolean_000999 10 20 30 40\n"}, "query image 'ashmolean_000999'",
     "ashmolean_2_query.txt"),
])
def test_bad_ground_truth_files_name_the_file(tmp_path, change, problem, named):
    files = {**OXFORD_GT, **change}
    write_gt(tmp_path / "gt", {name: text for name, text in files.items() if text is not None})
    with pytest.raises(InputError, match=problem) as error:
        read_oxford_gt_files(tmp_path / "gt", OXFORD_IMAGES)
    assert error.value.path == str(tmp_path / "gt" / named)
    with pytest.raises(InputError, match="no <landmark>_<n>_query.txt"):
        read_oxford_gt_files(tmp_path / "empty", OXFORD_IMAGES)


def patterned(width: int, height: int) -> bytes:
    """A JPEG whose pixels tell its orientation (a gradient in x, another in y)."""
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    out = io.BytesIO()
    Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


HOLIDAYS = ("100000", "100001", "100002", "100100", "100101", "100600", "100601", "100700", "100701")


class TinyHolidays(Holidays):
    expected_counts = (9, 4)


def serve_holidays(server, names=HOLIDAYS) -> AcquireOptions:
    images = {f"jpg/{n}.jpg": patterned(16, 8) for n in HOLIDAYS}  # jpgN.tar.gz's layout: jpg/NNNNSS.jpg
    listing = "".join(f"{n}.jpg\n" for n in names)
    return serve(server, "holidays", {
        "jpg1.tar.gz": tar_bytes({k: v for k, v in images.items() if k < "jpg/1006"}),
        "jpg2.tar.gz": tar_bytes({k: v for k, v in images.items() if k >= "jpg/1006"}),
        "eval_holidays.tgz": tar_bytes({"eval_holidays/holidays_images.dat": listing.encode(),
                                        "eval_holidays/holidays_map.py": b"# the official scorer\n"})})


def test_holidays_turns_the_listed_images_upright_and_ignores_the_query(server, tmp_path):
    root, spec = tmp_path / "data", TinyHolidays()
    spec.prepare(root, serve_holidays(server))
    folder = root / "holidays"
    assert sorted(p.name for p in (folder / "upright").iterdir()) == ["100600.png", "100700.png"]
    original = np.asarray(Image.open(folder / "jpg/100600.jpg"))
    assert np.array_equal(np.asarray(Image.open(folder / "upright/100600.png")), np.rot90(original, k=-1))  # 90 cw
    original = np.asarray(Image.open(folder / "jpg/100700.jpg"))
    assert np.array_equal(np.asarray(Image.open(folder / "upright/100700.png")), np.rot90(original, k=1))  # 270 cw
    assert spec.check(root) == []

    loaded = spec.load(root)
    gnd = loaded.ground_truth
    assert gnd.query_names == ("100000", "100100", "100600", "100700") and gnd.query_boxes is None
    assert loaded.db_paths[5] == folder / "upright/100600.png" and loaded.query_paths[2] == loaded.db_paths[5]
    assert loaded.db_paths[6] == folder / "jpg/100601.jpg"
    assert [p.tolist() for p in gnd.positives] == [[1, 2], [4], [6], [8]]
    assert [j.tolist() for j in gnd.junk] == [[0], [3], [5], [7]]  # the query itself

    # holidays_map.py skips the query wherever it is ranked. Query 100000 ranked first, then 100001, a wrong
    # image and 100002: positives at 0 and 2 once the query is out: AP = (1 + 1 + 1/2 + 2/3) / 4 = 19/24.
    # Query 100100 ranked second, its positive first: AP 1. Queries 3 and 4: their positive right after them.
    ranks = np.array([[0, 1, 3, 2, 4, 5, 6, 7, 8], [4, 3, 0, 1, 2, 5, 6, 7, 8], [5, 6, 0, 1, 2, 3, 4, 7, 8],
                      [0, 7, 8, 1, 2, 3, 4, 5, 6]])
    scores = oxford_scores(ranks, gnd.positives, gnd.junk, gnd.n_db)
    assert scores.ap.tolist() == pytest.approx([19 / 24, 1.0, 1.0, (0 + 1 / 2) / 2])

    unrotated = HolidaysUnrotated().load(root)  # the same folder, images as distributed, the same ground truth
    assert unrotated.db_paths[5] == folder / "jpg/100600.jpg"
    assert [p.tolist() for p in unrotated.ground_truth.positives] == [p.tolist() for p in gnd.positives]

    (folder / "upright/100700.png").unlink()
    with pytest.raises(InputError, match=r"1 upright copies are missing \(e.g. 100700.png\)"):
        spec.load(root)
    spec.prepare(root, serve_holidays(server))  # everything stamped: only the missing copy is written again
    assert spec.check(root) == []


def test_holidays_list_problems_name_the_file(tmp_path):
    path = tmp_path / "holidays_images.dat"
    path.write_text("100000.jpg\n100001.jpg\n10002.jpg\n")
    with pytest.raises(InputError, match=r"line 3: expected an image name NNNNSS.jpg, got '10002.jpg'") as error:
        read_image_list(path)
    assert error.value.path == str(path)
    path.write_text("100000.jpg\n100001.jpg\n100101.jpg\n")
    with pytest.raises(InputError, match="group 1001 has no query image 100100.jpg"):
        holidays_ground_truth(read_image_list(path), path)
    with pytest.raises(InputError, match="missing image list"):
        read_image_list(tmp_path / "nowhere.dat")


def test_holidays_verify_reports_a_missing_image(server, tmp_path):
    root, spec = tmp_path / "data", TinyHolidays()
    spec.prepare(root, serve_holidays(server, HOLIDAYS + ("100702",)))
    assert spec.check(root) == ["images in holidays_images.dat: 10, expected 9",
                                f"missing or unreadable database image: {root}/holidays/jpg/100702.jpg"]


def test_corrupt_archives_leave_nothing_behind(server, tmp_path):
    options = serve(server, "oxford5k", {"oxbuild_images-v1.tgz": b"not a tar archive",
                                         "gt_files_170407.tgz": text_tar(OXFORD_GT)})
    with pytest.raises(InputError, match="corrupt or unreadable archive"):
        TinyOxford().prepare(tmp_path, options)
    assert not (tmp_path / "oxford5k/jpg").exists() and not (tmp_path / "oxford5k/oxbuild_images-v1.tgz").exists()
    assert load_plugins().get("oxford5k")().check(tmp_path) == [
        f"{tmp_path}/oxford5k/jpg: not there: run `python -m benchmarks data download oxford5k`"]
