"""Ground-truth readers: real gnd pickles, refused code-carrying pickles, dbStruct .mat in both field orders."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import scipy.io

from benchmarks.core.errors import InputError
from datasets.formats import (
    PITTSBURGH_FIELDS,
    TOKYO_TM_FIELDS,
    DbStruct,
    read_dbstruct,
    read_oxford_gnd,
    read_place_ground_truth,
    read_revisited_gnd,
    write_dbstruct,
    write_revisited_gnd,
)
from tests.conftest import GND, PLACES


def test_real_revisited_gnd():
    gnd = read_revisited_gnd(GND["rparis6k"])
    assert (gnd.n_db, gnd.n_queries) == (6322, 70)
    assert gnd.query_boxes.shape == (70, 4) and gnd.query_names[0] == "paris_defense_000605"
    assert gnd.db_names[:2] == ("paris_general_001840", "paris_sacrecoeur_000094")
    assert gnd.easy[0][:3].tolist() == [85, 148, 210] and gnd.easy[0].dtype == np.int64


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({"gnd": [], "imlist": [], "qimlist": [], "x": _RunsCode(marker)}))
    with pytest.raises(InputError, match=r"refused to load (posix|os)\.system"):
        read_revisited_gnd(path)
    assert not marker.exists()


def test_numpy_arrays_inside_a_gnd_pickle_are_allowed(tmp_path):
    path = tmp_path / "gnd_np.pkl"
    gnd = [{"easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([], int), "bbx": np.array([1., 2, 3, 4])}]
    path.write_bytes(pickle.dumps({"gnd": gnd, "imlist": ["a", "b", "c"], "qimlist": ["q"]}, protocol=2))
    assert read_revisited_gnd(path).easy[0].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x03}q\x00(X", "corrupt pickle"),
        (pickle.dumps([1, 2]), "expected a dict with gnd, imlist, qimlist"),
        (pickle.dumps({"gnd": [{"easy": [5], "hard": [], "junk": []}], "imlist": ["a"], "qimlist": ["q"]}),
         r"gnd\[0\]\['easy'\] has id 5 outside 0..0"),
        (pickle.dumps({"gnd": [{"easy": [0], "junk": []}], "imlist": ["a"], "qimlist": ["q"]}), "no 'hard' list"),
        (pickle.dumps({"gnd": [{"easy": [0, -2], "hard": [], "junk": []}], "imlist": ["a"], "qimlist": ["q"]}),
         "has id -2 outside"),
        (pickle.dumps({"gnd": [{"easy": [[0], [0, 0]], "hard": [], "junk": []}], "imlist": ["a"], "qimlist": ["q"]}),
         "is not a flat list of ids"),
        (pickle.dumps({"gnd": [], "imlist": 3, "qimlist": []}), "must be lists of image names"),
        (pickle.dumps({"gnd": [{"ok": [0], "junk": []}], "imlist": ["a"], "qimlist": ["q"]}), "use --protocol oxford"),
        (pickle.dumps({"gnd": [], "imlist": ["a"], "qimlist": ["q"]}), "0 queries but 'qimlist' 1"),
    ],
)
def test_bad_gnd_pickles_are_named(tmp_path, content, message):
    path = tmp_path / "gnd_bad.pkl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        read_revisited_gnd(path)
    assert str(path) in str(error.value)


def test_original_protocol_gnd_unites_good_and_ok(tmp_path):
    path = tmp_path / "gnd_oxford5k.pkl"
    path.write_bytes(pickle.dumps({"gnd": [{"good": [0], "ok": [2], "junk": [1]}], "imlist": list("abc"),
                                   "qimlist": ["q"]}))
    gnd = read_oxford_gnd(path)
    assert gnd.positives[0].tolist() == [0, 2] and gnd.junk[0].tolist() == [1]
    with pytest.raises(InputError, match="not the revisited easy/hard split"):
        read_oxford_gnd(GND["roxford5k"])


def write_test_dbstruct(path, fields, n_db=4, n_q=2):
    db = DbStruct("test", tuple(f"db/{i:03d}.jpg" for i in range(n_db)), np.stack([np.arange(n_db) * 10.0,
                  np.zeros(n_db)], 1), tuple(f"q/{i:03d}.jpg" for i in range(n_q)),
                  np.stack([np.arange(n_q) * 30.0, np.zeros(n_q)], 1), 25.0)
    write_dbstruct(path, db, fields, (np.arange(n_db), np.arange(n_q)))


@pytest.mark.parametrize("fields", [PITTSBURGH_FIELDS, TOKYO_TM_FIELDS], ids=["pittsburgh", "tokyo_time_machine"])
def test_dbstruct_in_both_field_orders(tmp_path, fields):
    path = tmp_path / "db.mat"
    write_test_dbstruct(path, fields)
    db = read_dbstruct(path)
    assert db.which_set == "test" and db.pos_dist_thr == 25.0
    assert db.db_image_names == ("db/000.jpg", "db/001.jpg", "db/002.jpg", "db/003.jpg")
    assert db.query_image_names == ("q/000.jpg", "q/001.jpg")
    assert db.utm_db.shape == (4, 2) and db.utm_db[:, 0].tolist() == [0, 10, 20, 30]
    assert db.utm_queries.tolist() == [[0, 0], [30, 0]]


def test_dbstruct_with_a_missing_field_is_named(tmp_path):
    path = tmp_path / "db.mat"
    write_test_dbstruct(path, tuple(f for f in PITTSBURGH_FIELDS if f != "utmQ"))
    with pytest.raises(InputError, match="dbStruct lacks field"):
        read_dbstruct(path)
    scipy.io.savemat(path, {"other": np.zeros(2)})
    with pytest.raises(InputError, match="no 'dbStruct' variable"):
        read_dbstruct(path)
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(InputError, match="cannot read as a MATLAB .mat file"):
        read_dbstruct(path)


def test_place_ground_truth_by_extension(tmp_path):
    assert read_place_ground_truth(PLACES["pitts30k_test"]).n_queries == 6816
    bad = tmp_path / "gt.npz"
    np.savez(bad, utmDb=np.zeros((3, 2)))
    with pytest.raises(InputError, match="missing array"):
        read_place_ground_truth(bad)
    with pytest.raises(InputError, match="dbStruct .mat or an .npz"):
        read_place_ground_truth(tmp_path / "gt.txt")


def test_gnd_writer_round_trips_the_real_ground_truth(tmp_path):
    real = read_revisited_gnd(GND["roxford5k"])
    write_revisited_gnd(tmp_path / "gnd.pkl", real)
    again = read_revisited_gnd(tmp_path / "gnd.pkl")
    assert again.db_names == real.db_names and again.query_names == real.query_names
    assert all(np.array_equal(a, b) for a, b in zip(again.hard + again.junk, real.hard + real.junk, strict=True))
    assert np.array_equal(again.query_boxes, real.query_boxes)
