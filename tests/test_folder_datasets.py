"""A folder of one's own evaluates as a dataset (``--dataset revisited:PATH``, ``places:PATH``): the embedded
benchmarks' files copied into folders score exactly as the built-in datasets do, results record the folder,
and bad folders get one line naming the file and the fix."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation.results import load_result, stale_provenance
from datasets import load_plugins
from datasets.folder import PREFIX
from datasets.formats import load_pickle_safely
from datasets.names import dataset
from methods.netvlad import NetVLADMethod
from methods.weights import save_checkpoint
from tests.test_train import TINY_NETVLAD


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    save_checkpoint(path, NetVLADMethod(TINY_NETVLAD), "resnet18.test", {})
    return path


@pytest.fixture
def landmarks_folder(tmp_path, embedded_root):
    """synth_landmarks' gnd pickle and jpg/ copied into a folder of one's own."""
    folder = tmp_path / "My Landmarks"
    shutil.copytree(embedded_root / "synth_landmarks" / "jpg", folder / "jpg")
    shutil.copy(embedded_root / "synth_landmarks" / "gnd_synth_landmarks.pkl", folder)
    return folder


@pytest.fixture
def places_folder(tmp_path, embedded_root):
    """synth_places' test dbStruct beside its images, as a user would lay them out."""
    folder = tmp_path / "streets"
    shutil.copytree(embedded_root / "synth_places" / "images", folder / "images")
    shutil.copy(embedded_root / "synth_places" / "datasets" / "synth_places_test.mat", folder)
    return folder


def evaluate(checkpoint, name, root, results):
    code, out = run("evaluate", "--method", "netvlad", "--weights", checkpoint, "--dataset", name, "--root", root,
                    "--results", results, "--no-cache", "--allow-dirty")
    assert code == 0, out
    return out


def test_no_registered_dataset_takes_the_folder_prefix():
    assert [n for n in load_plugins().names() if n.startswith(PREFIX)] == []


@pytest.mark.parametrize(("fmt", "builtin", "fixture", "stored", "metrics"), [
    ("revisited", "synth_landmarks", "landmarks_folder", "folder_synth_landmarks",
     ("map_easy", "map_medium", "map_hard")),
    ("places", "synth_places", "places_folder", "folder_synth_places_test", ("recall@1", "recall@5", "recall@10")),
])
def test_a_folder_scores_exactly_as_the_builtin_dataset(fmt, builtin, fixture, stored, metrics, request, checkpoint,
                                                        embedded_root, tmp_path):
    folder = request.getfixturevalue(fixture)
    results = tmp_path / "results"
    evaluate(checkpoint, builtin, embedded_root, results)
    out = evaluate(checkpoint, f"{fmt}:{folder}", tmp_path / "data", results)
    mine_path = results / stored / "netvlad" / "resnet18.test.json"
    assert f"{stored} / netvlad / resnet18.test:" in out and str(mine_path) in out
    theirs = json.loads((results / builtin / "netvlad" / "resnet18.test.json").read_text())
    mine = json.loads(mine_path.read_text())
    assert all(0 < theirs["metrics"][m] < 1 for m in metrics)
    assert {m: mine["metrics"][m] for m in metrics} == {m: theirs["metrics"][m] for m in metrics}
    assert mine["per_query"] == theirs["per_query"] and mine["protocol"] == theirs["protocol"]
    assert mine["provenance"]["ground_truth_sha256"] == theirs["provenance"]["ground_truth_sha256"]
    record = mine["config"]["dataset_folder"]
    assert record["format"] == fmt and record["path"] == str(folder) and len(record["sha256"]) == 64
    assert "dataset_folder" not in theirs["config"]


def test_a_folder_result_is_checked_against_the_folder_it_names(landmarks_folder, checkpoint, tmp_path):
    """Not "not registered": the folder is found where the result says and its contents compared."""
    evaluate(checkpoint, f"revisited:{landmarks_folder}", tmp_path / "data", tmp_path / "results")
    result = load_result(tmp_path / "results" / "folder_synth_landmarks" / "netvlad" / "resnet18.test.json")
    assert stale_provenance(result, tmp_path / "data") == []
    image = next((landmarks_folder / "jpg").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    [problem] = stale_provenance(result, tmp_path / "data")
    assert "the folder's contents (sha256" in problem and str(landmarks_folder) in problem
    shutil.rmtree(landmarks_folder)
    assert stale_provenance(result, tmp_path / "data") == []  # not here: nothing to compare with


def test_the_folder_digest_follows_contents_not_place(landmarks_folder, tmp_path):
    def digest(folder):
        spec = dataset(f"revisited:{folder}")
        return spec.origin(tmp_path / "data", spec.load(tmp_path / "data"))["sha256"]

    before = digest(landmarks_folder)
    moved = shutil.copytree(landmarks_folder, tmp_path / "elsewhere")
    assert digest(moved) == before
    image = next((moved / "jpg").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert digest(moved) != before


def test_verify_info_download_and_gallery_take_a_folder(landmarks_folder, checkpoint, tmp_path):
    name = f"revisited:{landmarks_folder}"
    root = tmp_path / "data"
    assert run("data", "verify", name, "--root", root) == (0, f"{name}: sound\n")
    code, out = run("data", "download", name, "--root", root)
    assert code == 0 and f"ready under {landmarks_folder}" in out
    code, out = run("data", "info", name, "--root", root, "--json")
    info = json.loads(out)
    assert code == 0 and info["protocol"] == "revisited" and info["counts"] == {"test": {"db": 140, "queries": 20}}
    png = tmp_path / "g.png"
    code, out = run("plot", "gallery", "--method", "netvlad", "--weights", checkpoint, "--dataset", name,
                    "--queries", "0,19", "--top", "3", "--out", png, "--root", root)
    assert code == 0 and png.stat().st_size > 1000, out
    missing = sorted((landmarks_folder / "jpg").iterdir())[7]
    missing.unlink()
    code, out = run("data", "verify", name, "--root", root)
    assert code == 1 and f"problem: missing or unreadable database image: {missing}" in out
    code, out = run("data", "download", name, "--root", root)
    assert (code, out) == (2, f"error: missing or unreadable database image: {missing}\n")


def test_a_places_folder_with_a_missing_query_is_named(places_folder, tmp_path):
    query = dataset(f"places:{places_folder}").load(tmp_path / "data").query_paths[3]
    assert query.is_relative_to(places_folder / "images" / "queries_real")
    query.unlink()
    code, out = run("data", "verify", f"places:{places_folder}", "--root", tmp_path / "data")
    assert code == 1 and f"problem: missing or unreadable query image: {query}\n" in out


def rewrite_gnd(folder, change):
    path = folder / "gnd_synth_landmarks.pkl"
    gnd = load_pickle_safely(path)
    change(gnd)
    path.write_bytes(pickle.dumps(gnd))
    return path


def repeat_image(gnd):
    gnd["imlist"][5] = gnd["imlist"][4]


def repeat_id(gnd):
    gnd["gnd"][2]["junk"] = [*list(gnd["gnd"][2]["junk"]), int(gnd["gnd"][2]["easy"][0])]


def out_of_range(gnd):
    gnd["gnd"][1]["hard"] = [len(gnd["imlist"])]


@pytest.mark.parametrize(("change", "problem"), [
    (repeat_image, "1 database image(s) listed twice (e.g. '{name}'); each image must have one id: remove the "
                   "repeats"),
    (repeat_id, "gnd[2] lists id {id} in both easy and junk"),
    (out_of_range, "gnd[1]['hard'] has id {n} outside 0..{last} (imlist)"),
])
def test_a_bad_gnd_is_refused_in_one_line_naming_it(landmarks_folder, tmp_path, change, problem):
    path = rewrite_gnd(landmarks_folder, change)
    gnd = load_pickle_safely(path)
    expected = problem.format(name=gnd["imlist"][4], id=int(gnd["gnd"][2]["easy"][0]), n=len(gnd["imlist"]),
                              last=len(gnd["imlist"]) - 1)
    code, out = run("data", "verify", f"revisited:{landmarks_folder}", "--root", tmp_path / "data")
    assert (code, out) == (1, f"problem: {path}: {expected}\nrevisited:{landmarks_folder}: 1 problem(s)\n")


def test_bad_names_and_paths_get_one_line(landmarks_folder, tmp_path):
    root = ("--root", tmp_path / "data")
    code, out = run("data", "verify", f"revisited:{tmp_path / 'nowhere'}", *root)
    assert (code, out) == (2, f"error: {tmp_path / 'nowhere'}: no such folder: give revisited:PATH, PATH holding "
                              "a .pkl ground truth\n")
    code, out = run("data", "verify", f"revisted:{landmarks_folder}", *root)
    assert (code, out) == (2, f"error: unknown folder format 'revisted' in 'revisted:{landmarks_folder}': use "
                              "revisited:PATH (a gnd_*.pkl) or places:PATH (a dbStruct .mat)\n")
    code, out = run("data", "verify", f"places:{landmarks_folder}", *root)
    assert (code, out) == (2, f"error: {landmarks_folder}: no .mat ground-truth file here: give the folder that "
                              "holds it, or the file\n")
    shutil.copy(landmarks_folder / "gnd_synth_landmarks.pkl", landmarks_folder / "gnd_other.pkl")
    code, out = run("data", "verify", f"revisited:{landmarks_folder}", *root)
    assert (code, out) == (2, f"error: {landmarks_folder}: 2 .pkl ground-truth files (gnd_other.pkl, "
                              f"gnd_synth_landmarks.pkl): name one, revisited:{landmarks_folder / 'gnd_other.pkl'}\n")
    assert dataset(f"revisited:{landmarks_folder / 'gnd_other.pkl'}").name == "folder_other"
    with pytest.raises(InputError, match=r"unknown dataset 'synth_landmark'; did you mean synth_landmarks.*; a "
                                         r"folder of your own: revisited:PATH or places:PATH$"):
        dataset("synth_landmark")
