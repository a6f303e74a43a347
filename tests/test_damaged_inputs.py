"""Every CLI command over a corpus of damaged inputs (issue 19): no traceback, a non-zero exit, and one message
naming the damaged file. Each case builds its damaged file in tmp_path and returns the command line."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner
from PIL import Image

from benchmarks.commands.main import cli
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.training.common import save_state
from datasets.formats import load_pickle_safely
from methods.netvlad import NetVLADConfig, NetVLADMethod
from methods.weights import save_checkpoint
from tests.conftest import GND

RESULT = REPO_ROOT / "results" / "synth_landmarks" / "dolg" / "effl0.synth_landmarks.json"
REPORTED = REPO_ROOT / "paper_tables" / "reported" / "dolg.yaml"
TINY = NetVLADConfig(backbone="resnet18", feature_index=3, drop_final_relu=False, num_clusters=4, whiten_dim=16)
TRAIN = ["train", "netvlad", "--dataset", "synth_places", "--steps", "1", "--init", "none", "--config",
         "backbone=resnet18", "--config", "feature_index=3", "--config", "drop_final_relu=false", "--config",
         "num_clusters=4", "--config", "whiten_dim=16", "--set", "cache_refresh=4", "--set", "n_sampled_negatives=20",
         "--set", "tuples_per_batch=2", "--set", "train_from=layer3", "--set", "cluster_images=20", "--name",
         "resnet18.test"]
Case = Callable[[Path, Path], tuple[list[str], Path]]  # (tmp_path, embedded root) -> (arguments, damaged file)


def _checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "tiny.pt"
    save_checkpoint(path, NetVLADMethod(TINY), "resnet18.tiny", {})
    return path


def _payload(path: Path, change: Callable[[dict], None]) -> Path:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def _image(tmp: Path, name: str, image: Image.Image | bytes) -> Path:
    path = tmp / name
    path.write_bytes(image) if isinstance(image, bytes) else image.save(path)
    return path


def _extract(tmp: Path, image: Path) -> list[str]:
    return ["extract", "--method", "netvlad", "--weights", str(_checkpoint(tmp)), str(image), "--out",
            str(tmp / "out.npy")]


def _results(tmp: Path, damage: Callable[[str], str | bytes]) -> Path:
    """A results folder holding one committed result, damaged; returns the damaged file."""
    path = tmp / "res" / "synth_landmarks" / "dolg" / RESULT.name
    path.parent.mkdir(parents=True)
    damaged = damage(RESULT.read_text())
    path.write_bytes(damaged) if isinstance(damaged, bytes) else path.write_text(damaged)
    (tmp / "rep").mkdir()
    shutil.copy(REPORTED, tmp / "rep")
    return path


def _result_json(change: Callable[[dict], None]) -> Callable[[str], str]:
    def damage(text: str) -> str:
        data = json.loads(text)
        change(data)
        return json.dumps(data, indent=1)
    return damage


def _disagree(data: dict) -> None:
    data["metrics"]["map_medium"] += 0.05


def _drop_metric(data: dict) -> None:
    del data["metrics"]["map_medium"]


RESULT_DAMAGE: dict[str, Callable[[str], str | bytes]] = {
    "per-query values disagree with the metrics": _result_json(_disagree),
    "a metric key missing": _result_json(_drop_metric),
    "NaN per-query value": lambda text: text.replace('"ap_easy": [', '"ap_easy": [NaN, ', 1),
    "duplicated key": lambda text: text.replace('"method": "dolg"', '"method": "dolg", "method": "netvlad"', 1),
    "not UTF-8": lambda text: text.replace('"dolg"', '"d\udcffg"', 1).encode("utf-8", "surrogateescape"),
    "absurdly nested": lambda text: text.replace('"notes": ', '"notes": ' + "[" * 100_000 + "]" * 100_000 + ", "
                                                 '"x": ', 1),
}


def _result_case(command: str, damage: str) -> Case:
    def case(tmp: Path, root: Path) -> tuple[list[str], Path]:
        path = _results(tmp, RESULT_DAMAGE[damage])
        shared = ["--results", str(tmp / "res"), "--reported", str(tmp / "rep")]
        args = {"tables": ["tables", *shared, "--out", str(tmp / "tables")],
                "check": ["check", *shared, "--tables", str(tmp / "tables")],
                "plot": ["plot", "summary", *shared, "--out", str(tmp / "plots")],
                "compare": ["compare", str(path), str(RESULT)]}[command]
        return args, path
    return case


def _gnd(tmp: Path, change: Callable[[list[dict]], None]) -> tuple[list[str], Path]:
    gnd = [{"easy": [0], "hard": [1], "junk": [2], "bbx": [0, 0, 5, 5]}, {"easy": [3], "hard": [], "junk": [],
                                                                         "bbx": [1, 1, 4, 4]}]
    change(gnd)
    path = tmp / "gnd_damaged.pkl"
    path.write_bytes(pickle.dumps({"gnd": gnd, "imlist": list("abcd"), "qimlist": ["q0", "q1"]}))
    ranks = tmp / "r.npy"
    np.save(ranks, np.array([[3, 1, 2, 0], [3, 0, 1, 2]]))
    return ["score", "revisited", "--gnd", str(path), "--ranks", str(ranks)], path


def _place_gt(tmp: Path, threshold: object, suffix: str) -> tuple[list[str], Path]:
    path = tmp / f"gt{suffix}"
    utm_db, utm_q = np.array([[0.0, 0], [100, 0]]), np.array([[1.0, 0]])
    if suffix == ".npz":
        np.savez(path, utmDb=utm_db, utmQ=utm_q, posDistThr=np.asarray(threshold))
    else:
        scipy.io.savemat(path, {"dbStruct": {"whichSet": "test", "dbImageFns": np.array(["a.jpg", "b.jpg"], object),
                                             "utmDb": utm_db.T, "qImageFns": np.array(["q.jpg"], object),
                                             "utmQ": utm_q.T, "posDistThr": threshold}})
    predictions = tmp / "p.npy"
    np.save(predictions, np.array([[0, 1]]))
    return ["score", "recall", "--gt", str(path), "--predictions", str(predictions), "--n", "1"], path


def _dataset_copy(tmp: Path, root: Path, name: str) -> Path:
    shutil.copytree(root / name, tmp / "root" / name)
    return tmp / "root"


def _evaluate(tmp: Path, root: Path) -> list[str]:
    return ["evaluate", "--method", "netvlad", "--weights", str(_checkpoint(tmp)), "--dataset", "synth_landmarks",
            "--root", str(root), "--results", str(tmp / "res"), "--allow-dirty"]


def _damaged_gnd_dataset(tmp: Path, root: Path) -> tuple[list[str], Path]:
    root = _dataset_copy(tmp, root, "synth_landmarks")
    path = root / "synth_landmarks" / "gnd_synth_landmarks.pkl"
    data = load_pickle_safely(path)
    data["gnd"][3]["bbx"] = [float("nan"), 0, 10, 10]
    path.write_bytes(pickle.dumps(data))
    return _evaluate(tmp, root), path


def _truncated_download(tmp: Path, root: Path) -> tuple[list[str], Path]:
    root = _dataset_copy(tmp, root, "synth_places")
    path = next((root / "synth_places" / "images").rglob("*.jpg"))
    path.write_bytes(path.read_bytes()[:100])
    return ["data", "verify", "synth_places", "--root", str(root)], path


def _damaged_manifest(tmp: Path, root: Path) -> tuple[list[str], Path]:
    root = _dataset_copy(tmp, root, "synth_places")
    path = root / "synth_places" / "MANIFEST.json"
    path.write_text("[1, 2]")
    return ["data", "verify", "synth_places", "--root", str(root)], path


def _root_under_a_file(tmp: Path, root: Path) -> tuple[list[str], Path]:
    path = tmp / "root"
    path.write_text("not a folder")
    return ["data", "verify", "synth_places", "--root", str(path / "data")], path


def _edited_gnd(tmp: Path, command: str) -> tuple[list[str], Path]:
    """roxford5k's real gnd with one easy positive moved to hard: a valid pickle whose sha256 is not the published."""
    path = tmp / "root" / "roxford5k" / "gnd_roxford5k.pkl"
    path.parent.mkdir(parents=True)
    data = load_pickle_safely(GND["roxford5k"])
    entry = data["gnd"][0]
    entry["easy"], entry["hard"] = list(entry["easy"][1:]), [*entry["hard"], entry["easy"][0]]
    path.write_bytes(pickle.dumps(data))
    if command == "verify":
        return ["data", "verify", "roxford5k", "--root", str(tmp / "root")], path
    return ["evaluate", "--method", "netvlad", "--weights", str(_checkpoint(tmp)), "--dataset", "roxford5k", "--root",
            str(tmp / "root"), "--results", str(tmp / "res"), "--allow-dirty"], path


def _damaged_lock(tmp: Path, root: Path) -> tuple[list[str], Path]:
    path = tmp / "root" / "roxford5k" / "checksums.lock.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"oxbuild_images-v1.tgz": {"size": 1}}')
    return ["data", "download", "roxford5k", "--root", str(tmp / "root"), "--mirror", "http://127.0.0.1:9",
            "--mirror-only"], path


def _reported_duplicate_key(tmp: Path, root: Path) -> tuple[list[str], Path]:
    _results(tmp, lambda text: text)
    path = tmp / "rep" / REPORTED.name
    path.write_text(path.read_text().replace("method: dolg\n", "method: dolg\nmethod: netvlad\n", 1))
    return ["tables", "--results", str(tmp / "res"), "--reported", str(tmp / "rep"), "--out", str(tmp / "t")], path


def _state(tmp: Path, root: Path, payload: dict) -> tuple[list[str], Path]:
    out = tmp / "w.pt"
    path = Path(f"{out}.state")
    save_state(path, payload)
    return [*TRAIN, "--out", str(out), "--root", str(root)], path


def _bomb(tmp: Path, root: Path) -> tuple[list[str], Path]:
    path = _image(tmp, "bomb.png", Image.new("L", (4000, 4000)))  # over the cap the test sets below
    return _extract(tmp, path), path


CASES: dict[str, Case] = {
    **{f"{command}: {damage}": _result_case(command, damage) for command in ("tables", "check", "plot", "compare")
       for damage in RESULT_DAMAGE},
    "extract: garbage checkpoint": lambda tmp, root: (
        _extract(tmp, _image(tmp, "a.png", Image.new("RGB", (40, 30)))),
        _image(tmp, "tiny.pt", b"\x80\x02garbage" * 100)),
    "extract: checkpoint missing its state_dict": lambda tmp, root: (
        _extract(tmp, _image(tmp, "a.png", Image.new("RGB", (40, 30)))),
        _payload(tmp / "tiny.pt", lambda p: p.pop("state_dict"))),
    "extract: checkpoint config of the wrong type": lambda tmp, root: (
        _extract(tmp, _image(tmp, "a.png", Image.new("RGB", (40, 30)))),
        _payload(tmp / "tiny.pt", lambda p: p.__setitem__("config", ["resnet18"]))),
    "extract: checkpoint config field of the wrong type": lambda tmp, root: (
        _extract(tmp, _image(tmp, "a.png", Image.new("RGB", (40, 30)))),
        _payload(tmp / "tiny.pt", lambda p: p["config"].__setitem__("num_clusters", "four"))),
    "extract: float image": lambda tmp, root: (lambda p: (_extract(tmp, p), p))(
        _image(tmp, "f.tiff", Image.fromarray(np.ones((30, 40), np.float32), "F"))),
    "extract: decompression bomb": _bomb,
    "extract: a query box a million times the image": lambda tmp, root: (lambda p: (
        _extract(tmp, p) + ["--query-box", "0,0,40000,30000"], p))(_image(tmp, "a.png", Image.new("RGB", (40, 30)))),
    "extract: symlink loop": lambda tmp, root: (lambda p: (os.symlink(p, p), (_extract(tmp, p), p))[1])(
        tmp / "loop.jpg"),
    "extract: truncated image": lambda tmp, root: (lambda p: (_extract(tmp, p), p))(
        _image(tmp, "t.jpg", (REPO_ROOT / "tests" / "data" / "photo.jpg").read_bytes()[:300]
               if (REPO_ROOT / "tests" / "data" / "photo.jpg").exists() else b"\xff\xd8\xff\xe0" + b"\0" * 50)),
    "score revisited: an id twice in a list": lambda tmp, root: _gnd(tmp, lambda g: g[0].__setitem__("easy", [0, 0])),
    "score revisited: an id in easy and junk": lambda tmp, root: _gnd(tmp, lambda g: g[0].__setitem__("junk", [0])),
    "score revisited: NaN query box": lambda tmp, root: _gnd(tmp, lambda g: g[1].__setitem__("bbx", [0, 0, "nan", 4])),
    "score revisited: inverted query box": lambda tmp, root: _gnd(tmp, lambda g: g[1].__setitem__("bbx", [4, 4, 1, 1])),
    "score recall: NaN threshold (.npz)": lambda tmp, root: _place_gt(tmp, np.nan, ".npz"),
    "score recall: non-numeric threshold (.npz)": lambda tmp, root: _place_gt(tmp, "25m", ".npz"),
    "score recall: NaN threshold (.mat)": lambda tmp, root: _place_gt(tmp, np.nan, ".mat"),
    "score recall: non-numeric threshold (.mat)": lambda tmp, root: _place_gt(tmp, "far", ".mat"),
    "evaluate: NaN query box in the dataset's gnd": _damaged_gnd_dataset,
    "data verify: a truncated checksummed image": _truncated_download,
    "data verify: the data root lies under a file": _root_under_a_file,
    "data verify: a damaged MANIFEST.json": _damaged_manifest,
    "data verify: the data root is a symlink loop": lambda tmp, root: (lambda p: (
        os.symlink(p, p), (["data", "verify", "synth_places", "--root", str(p)], p))[1])(tmp / "loop"),
    "data verify: an edited ground truth (valid pickle)": lambda tmp, root: _edited_gnd(tmp, "verify"),
    "evaluate: an edited ground truth (valid pickle)": lambda tmp, root: _edited_gnd(tmp, "evaluate"),
    "data download: a lock file entry without its sha256": _damaged_lock,
    "tables: a duplicated key in reported numbers": _reported_duplicate_key,
    "train: a state file of another run": lambda tmp, root: _state(tmp, root, {
        "model": {}, "optimiser": {}, "step": 1, "round": 1, "report": {}, "miner_memory": {}, "binding": "0" * 64}),
    "train: a state file missing fields": lambda tmp, root: _state(tmp, root, {"step": 1}),
    "train: a garbage state file": lambda tmp, root: (lambda args, p: (p.write_bytes(b"garbage"), (args, p))[1])(
        *_state(tmp, root, {})),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_input_ends_in_one_line_naming_the_file(name: str, tmp_path: Path, embedded_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the bomb case's 16 Mpixels is over twice this
    args, damaged = CASES[name](tmp_path, embedded_root)
    result = CliRunner().invoke(cli, args)
    stderr = result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{name}: {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output + stderr, stderr
    assert result.exit_code != 0, result.output
    said = [line for line in result.output.splitlines() if line.startswith(("error:", "problem:"))]
    assert any(str(damaged) in line for line in said), stderr
    if "error:" in stderr:  # one line: nothing after it (was: PyTorch's paragraphs of weights_only advice)
        assert stderr[stderr.index("error:"):].strip().count("\n") == 0, stderr
