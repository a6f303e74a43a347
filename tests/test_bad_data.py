"""Bad data is detected and named where it is read: truncated, corrupt or forged JPEGs, an image the ground
truth names but the folder lacks, a gnd pickle with an id out of range, a dbStruct .mat missing a field.
Each case goes through the commands a user runs (``data verify``, ``evaluate``, ``score``)."""
from __future__ import annotations

import io
import pickle
import shutil
import struct

import pytest
import scipy.io
import torch
from click.testing import CliRunner
from PIL import Image

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation.extract import load_image
from datasets import load_plugins
from datasets.base import unreadable_images
from datasets.formats import PITTSBURGH_FIELDS, load_pickle_safely, read_dbstruct
from methods.netvlad import NetVLADMethod
from methods.weights import save_checkpoint
from tests.test_train import TINY_NETVLAD


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def root(tmp_path, embedded_root):
    """A writable copy of the embedded benchmarks, to be damaged."""
    for name in ("synth_landmarks", "synth_places"):
        shutil.copytree(embedded_root / name, tmp_path / "data" / name)
    return tmp_path / "data"


def landmarks(root):
    return load_plugins().get("synth_landmarks")().load(root)


def forged_header(size: int = 60000) -> bytes:
    """A valid small JPEG whose header claims size x size pixels (a decompression bomb)."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", size, size)
    return bytes(data)


def test_damaged_jpegs_are_named_by_verify_and_by_the_loader(root):
    paths = landmarks(root).db_paths
    truncated, corrupt, forged = paths[:3]
    truncated.write_bytes(truncated.read_bytes()[:-400])  # header intact, image data cut
    corrupt.write_bytes(b"\x00" * 2000)
    forged.write_bytes(forged_header())
    for path in (truncated, corrupt):
        with pytest.raises(InputError, match="cannot read image") as error:
            load_image(path, NetVLADMethod.protocol)
        assert str(error.value).startswith(f"{path}: ")
    # verify reads headers only (1M images in minutes): truncated image data is caught when the image is read
    assert unreadable_images(paths[:5]) == [corrupt, forged]
    code, out = run("data", "verify", "synth_landmarks", "--root", root)
    assert code == 1
    for path in (truncated, corrupt, forged):
        assert f"problem: {path}: missing or changed since it was generated" in out  # the manifest
    for path in (corrupt, forged):
        assert f"problem: missing or unreadable database image: {path}" in out


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "w.pt"
    save_checkpoint(path, NetVLADMethod(TINY_NETVLAD), "resnet18.test", {})
    return path


def test_an_image_the_ground_truth_names_but_the_folder_lacks(root, checkpoint, tmp_path):
    missing = landmarks(root).db_paths[7]
    missing.unlink()
    code, out = run("data", "verify", "synth_landmarks", "--root", root)
    assert code == 1 and f"problem: missing or unreadable database image: {missing}" in out
    code, out = run("evaluate", "--method", "netvlad", "--weights", checkpoint, "--dataset", "synth_landmarks",
                    "--root", root, "--results", tmp_path / "results", "--allow-dirty")
    assert code == 2 and str(missing) in out and "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_a_gnd_id_out_of_range_is_named_by_verify_and_score(root, tmp_path):
    gnd_path = root / "synth_landmarks" / "gnd_synth_landmarks.pkl"
    gnd = load_pickle_safely(gnd_path)
    n_db = len(gnd["imlist"])
    gnd["gnd"][3]["hard"] = [*list(gnd["gnd"][3]["hard"]), n_db + 4]
    gnd_path.write_bytes(pickle.dumps(gnd))
    expected = f"{gnd_path}: gnd[3]['hard'] has id {n_db + 4} outside 0..{n_db - 1} (imlist)"
    code, out = run("data", "verify", "synth_landmarks", "--root", root)
    assert code == 1 and f"problem: {expected}" in out
    ranks = tmp_path / "ranks.npy"
    ranks.write_bytes(b"")
    code, out = run("score", "revisited", "--gnd", gnd_path, "--ranks", ranks)
    assert (code, out) == (2, f"error: {expected}\n")


def test_a_dbstruct_missing_a_field_is_named_by_verify_and_score(root):
    mat = root / "synth_places" / "datasets" / "synth_places_test.mat"
    struct_ = scipy.io.loadmat(str(mat), squeeze_me=True)["dbStruct"]
    kept = [f for f in PITTSBURGH_FIELDS if f != "utmQ"]
    scipy.io.savemat(str(mat), {"dbStruct": {f: struct_[f].item() for f in kept}})
    with pytest.raises(InputError, match="dbStruct lacks field\\(s\\) utmQ"):
        read_dbstruct(mat)
    code, out = run("data", "verify", "synth_places", "--root", root)
    assert code == 1 and f"problem: {mat}: dbStruct lacks field(s) utmQ (has: " in out
    ranks = root / "ranks.npy"
    ranks.write_bytes(b"")
    code, out = run("score", "recall", "--gt", mat, "--predictions", ranks)
    assert code == 2 and out.startswith(f"error: {mat}: dbStruct lacks field(s) utmQ") and out.count("\n") == 1
