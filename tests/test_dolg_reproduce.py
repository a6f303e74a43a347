"""`reproduce` and DOLG's training: offline it stops before writing anything with one message naming what it
could not fetch and the three ways to provide it; files already under the data root count as there; the
classification loop resumes to the same weights; and end to end, weights trained on the embedded landmarks
are reproduced on the embedded benchmark with the protocol recorded."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.acquire import AcquireOptions
from benchmarks.core.fetchable import Needed, check_fetchable
from benchmarks.evaluation.reproduce import ReproduceOptions, missing_files, plan
from benchmarks.training import classification as train_classification_module
from benchmarks.training import common as train_common
from benchmarks.training.classification import learning_rate, random_crop, train_classification
from benchmarks.training.common import StateSchedule, TrainOptions
from datasets import load_plugins as load_datasets
from methods.dolg import DOLGConfig, DOLGMethod
from tests.test_train import _cli

TINY = ["--config", "backbone=resnet18", "--config", "dim=32", "--set", "batch_size=8", "--set", "image_size=64",
        "--set", "min_crop_area=0.5"]


def run(*args: object):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


@pytest.fixture
def offline(monkeypatch):
    """No network at all: every request fails to connect, as on a machine without internet."""
    def refuse(request: object, *args: object, **kwargs: object) -> object:
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_offline_reproduce_stops_at_once_naming_what_and_how(tmp_path, offline):
    root = tmp_path / "data"
    result = run("reproduce", "dolg", "--root", root, "--results", tmp_path / "results", "--allow-dirty")
    assert result.exit_code == 2
    message = result.output + result.stderr
    for expected in ("could not fetch", "nothing was downloaded or written",
                     "dataset roxford5k: gnd_roxford5k.pkl (cmp.felk.cvut.cz: URLError: [Errno 101] Network is",
                     "dataset roxford5k: oxbuild_images-v1.tgz (www.robots.ox.ac.uk: URLError",
                     "dataset rparis6k: paris_1-v1.tgz, paris_2-v1.tgz (www.robots.ox.ac.uk",
                     "weights dolg resnet50.gldv2: r50_dolg_512.pt (huggingface.co: URLError",
                     "weights dolg resnet101.gldv2: r101_dolg_512.pt",
                     "--mirror URL_PREFIX", "already under the data root", "--weights PATH"):
        assert expected in message, expected
    assert not root.exists() and not (tmp_path / "results").exists()  # no partial files, not even folders
    r1m = run("reproduce", "dolg", "--r1m", "--root", root, "--allow-dirty")
    assert r1m.exit_code == 2 and "dataset revisitop1m: revisitop1m.txt, revisitop1m.1.tar.gz, " \
        "revisitop1m.2.tar.gz and 98 more" in r1m.output + r1m.stderr


def test_files_already_under_the_data_root_are_not_fetched(tmp_path):
    options = ReproduceOptions(data_root=tmp_path, acquire=AcquireOptions(mirrors=("http://127.0.0.1:9/m",)))
    datasets, weights = plan(DOLGMethod, options)
    assert [d.name for d in datasets] == ["roxford5k", "rparis6k"] and weights == ["resnet50.gldv2",
                                                                                   "resnet101.gldv2"]
    (tmp_path / "roxford5k").mkdir()
    (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(b"placed by hand")
    (tmp_path / "weights" / "dolg").mkdir(parents=True)
    (tmp_path / "weights" / "dolg" / "r101_dolg_512.pt").write_bytes(b"placed by hand")
    needed = {(n.what, n.path.name): n for n in missing_files(DOLGMethod, datasets, weights, options)}
    assert set(needed) == {("dataset roxford5k", "oxbuild_images-v1.tgz"), ("dataset rparis6k", "gnd_rparis6k.pkl"),
                           ("dataset rparis6k", "paris_1-v1.tgz"), ("dataset rparis6k", "paris_2-v1.tgz"),
                           ("weights dolg resnet50.gldv2", "r50_dolg_512.pt")}
    # mirrors first, laid out as the data root
    assert needed["weights dolg resnet50.gldv2", "r50_dolg_512.pt"].urls == (
        "http://127.0.0.1:9/m/weights/dolg/r50_dolg_512.pt", DOLGMethod.weights["resnet50.gldv2"].url)
    plus = plan(DOLGMethod, dataclasses.replace(options, r1m=True))[0]
    assert [d.name for d in plus] == ["roxford5k", "rparis6k", "roxford5k+1m", "rparis6k+1m"]
    assert any(n.what == "dataset revisitop1m" for n in missing_files(DOLGMethod, plus, [], options))


def test_sources_are_probed_once_per_host(tmp_path, monkeypatch):
    asked = []

    def refuse(request: urllib.request.Request, *args: object, **kwargs: object) -> object:
        asked.append(request.full_url)
        raise urllib.error.URLError("down")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    needed = [Needed("dataset big", tmp_path / f"part{i}", (f"http://127.0.0.1:9/part{i}",)) for i in range(5)]
    needed.append(Needed("weights x", tmp_path / "w.pt", (), "not published: train them"))
    with pytest.raises(Exception, match=r"dataset big: part0, part1, part2 and 2 more .*down.*\n.*weights x: w.pt "
                                        r"\(not published: train them\)"):
        check_fetchable(needed, tmp_path)
    assert asked == ["http://127.0.0.1:9/part0"]


def test_random_crops_and_the_learning_rate_schedule():
    rng = np.random.default_rng(0)
    image = torch.arange(3 * 40 * 60, dtype=torch.float32).view(3, 40, 60)
    crop = random_crop(image, 16, 1.0, rng)
    assert crop.shape == (3, 16, 16)
    recipe = DOLGMethod.recipe
    assert learning_rate(recipe, 0, 100) == pytest.approx(0.1 * 0.01)  # warm-up starts at 0.1 x
    assert learning_rate(recipe, 5, 100) == pytest.approx(0.5 * 0.01 * (1 + np.cos(np.pi * 0.05)))
    assert learning_rate(recipe, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert (recipe.margin, recipe.scale, recipe.batch_size, recipe.image_size) == (0.15, 30.0, 64, 224)


@pytest.mark.slow
def test_classification_training_resumes_to_the_same_weights(embedded_root, tmp_path, monkeypatch):
    split = load_datasets().get("synth_landmarks")().load(embedded_root, "train")
    recipe = dataclasses.replace(DOLGMethod.recipe, batch_size=4, image_size=48, state_every=2)

    def trained(state: Path | None) -> DOLGMethod:
        torch.manual_seed(0)
        model = DOLGMethod(DOLGConfig(backbone="resnet18", dim=16))
        report = train_classification(model, split, recipe, TrainOptions(steps=4, seed=1, state=state))
        assert report["classes"] == 20 and report["steps"] == 4
        return model

    straight = trained(None)
    state = tmp_path / "run.state"
    save = train_classification_module.save_state

    def save_then_die(path: Path, payload: dict) -> None:
        save(path, payload)
        raise KeyboardInterrupt  # killed right after its first state write (step 2)

    monkeypatch.setattr(train_classification_module, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trained(state)
    monkeypatch.setattr(train_classification_module, "save_state", save)
    assert torch.load(state, weights_only=True)["step"] == 2
    resumed = trained(state)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_in_progress_and_the_run_resumes_from_it(embedded_root, tmp_path, monkeypatch,
                                                                          caplog, sent):
    split = load_datasets().get("synth_landmarks")().load(embedded_root, "train")
    recipe = dataclasses.replace(DOLGMethod.recipe, batch_size=4, image_size=48)  # state_every: 100 steps
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def trained(state: Path | None) -> DOLGMethod:
        torch.manual_seed(0)
        model = DOLGMethod(DOLGConfig(backbone="resnet18", dim=16))
        train_classification(model, split, recipe, TrainOptions(steps=4, seed=1, state=state))
        return model

    straight = trained(None)
    state = tmp_path / "run.state"
    crops = []

    def crop_then_signal(*args: object) -> torch.Tensor:
        crops.append(1)
        if len(crops) == 5:  # the first crop of step 2: the signal comes while that step runs
            os.kill(os.getpid(), sent)
        return random_crop(*args)

    monkeypatch.setattr(train_classification_module, "random_crop", crop_then_signal)
    with pytest.raises(KeyboardInterrupt):
        trained(state)
    monkeypatch.undo()
    assert len(crops) == 8 and torch.load(state, weights_only=True)["step"] == 2  # step 2 finished, then saved
    assert f"interrupted at step 2 of 4; the state of step 2 is in {state}: the same command resumes" in caplog.text
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    resumed = trained(state)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_state_is_written_once_a_minute_whatever_the_step_interval(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(train_common.time, "monotonic", lambda: clock[0])
    schedule = StateSchedule(None, every=100)
    assert not schedule.due(7, 500) and schedule.due(100, 500) and schedule.due(500, 500)
    clock[0] += train_common.STATE_SECONDS
    assert schedule.due(8, 500)
    schedule.saved()
    assert not schedule.due(9, 500)


@pytest.mark.slow
def test_reproduce_end_to_end_with_weights_trained_here(embedded_root, tmp_path):
    weights = tmp_path / "dolg-synth.pt"
    trained = run("train", "dolg", "--dataset", "synth_landmarks", "--steps", 2, "--init", "none", *TINY,
                  "--name", "resnet18.synth_landmarks", "--out", weights, "--root", embedded_root, "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    result = run("reproduce", "dolg", "--weights", weights, "--dataset", "synth_landmarks", "--root", embedded_root,
                 "--results", tmp_path / "results", "--device", "cpu", "--batch-size", 32, "--allow-dirty")
    assert result.exit_code == 0, result.output
    assert "synth_landmarks / dolg / resnet18.synth_landmarks (queries cropped): map_easy" in result.output
    saved = json.loads((tmp_path / "results" / "synth_landmarks" / "dolg" / "resnet18.synth_landmarks.json")
                       .read_text())
    protocol = saved["config"]["protocol"]
    assert protocol["scales"] == [0.3535, 0.5, 0.7071, 1.0, 1.4142] and protocol["max_size"] is None
    assert protocol["queries_cropped"] is True and saved["config"]["descriptor_dim"] == 32
    assert saved["config"]["method"]["multi_atrous"] is False and saved["config"]["method"]["backbone"] == "resnet18"
    assert 0 <= saved["metrics"]["map_medium"] <= 1 and saved["provenance"]["weights_sha256"]


@pytest.mark.slow
def test_torchrun_trains_with_two_processes(embedded_root, tmp_path):
    """DDP over the model and its ArcFace head together (CPU, gloo): each process takes half of every batch."""
    out = tmp_path / "two.pt"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    done = _cli("train", "dolg", "--dataset", "synth_landmarks", "--steps", "2", "--init", "none", *TINY,
                "--name", "resnet18.ddp",
                "--out", str(out), "--root", str(embedded_root), "--device", "cpu", launcher=torchrun,
                env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    origin = json.loads(Path(f"{out}.json").read_text())["origin"]
    assert origin["processes"] == 2 and origin["steps"] == 2 and origin["classes"] == 20
    assert not Path(f"{out}.state").exists()
