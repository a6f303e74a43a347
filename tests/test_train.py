"""The shared training loop: resume gives the same weights, torchrun (gloo, 2 processes) gives the same
weights as one process, the CLI trains, saves and evaluates, and both methods' parts receive gradients."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.core.errors import InputError
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.evaluation.results import load_result
from benchmarks.training.common import TrainOptions, load_state, save_state
from benchmarks.training.triplet import _learning_rate, _trainable_parameters, _validate, train
from datasets import load_plugins as load_datasets
from methods.layers.column_pooling import split_columns, stride1_max_pool_columns
from methods.losses import triplet_loss
from methods.mscfp import MSCFPConfig, MSCFPMethod
from methods.netvlad import NetVLADConfig, NetVLADMethod
from methods.recipes import TripletRecipe
from methods.weights import load_checkpoint

TINY_NETVLAD = NetVLADConfig(backbone="resnet18", feature_index=3, drop_final_relu=False, num_clusters=4,
                             whiten_dim=16)
TINY_MSCFP = MSCFPConfig(backbone="resnet18", feature_index=4, subvector_dim=128, num_clusters=4, whiten_dim=16)
PLACES_RECIPE = {"train_from": "layer3", "cache_refresh": 4, "n_sampled_negatives": 20, "tuples_per_batch": 2,
                 "n_negatives": 3, "lr": 0.01, "cluster_images": 20}
CLI_CONFIG = ["--config", "backbone=resnet18", "--config", "feature_index=3", "--config", "drop_final_relu=false",
              "--config", "num_clusters=4", "--config", "whiten_dim=16"]


def _places_run(root: Path, steps: int, state: Path | None) -> NetVLADMethod:
    torch.manual_seed(0)
    model = NetVLADMethod(TINY_NETVLAD)
    recipe = dataclasses.replace(NetVLADMethod.recipe, **PLACES_RECIPE)
    split = load_datasets().get("synth_places")().load(root, "train")
    train(model, split, recipe, TrainOptions(steps=steps, seed=3, state=state))
    return model


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_weights(embedded_root, tmp_path, caplog):
    straight = _places_run(embedded_root, 4, None)
    state = tmp_path / "run.state"
    _places_run(embedded_root, 2, state)       # stops after its first round, as a killed run would
    assert state.exists()
    assert "resuming" not in caplog.text
    with caplog.at_level(logging.INFO, logger="benchmarks.training.common"):
        resumed = _places_run(embedded_root, 4, state)
    assert f"resuming from step 2 of 4 saved in {state}" in caplog.text  # the resume is said, with how to avoid it
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    untrained = _places_run(embedded_root, 0, None)
    assert not torch.equal(untrained.vlad.centroids, straight.vlad.centroids)  # the steps did change weights


def test_a_state_file_found_is_said_with_its_step_and_how_to_start_afresh(tmp_path, caplog):
    state = tmp_path / "w.pt.state"
    with caplog.at_level(logging.INFO, logger="benchmarks.training.common"):
        assert load_state(state, 80) is None
        assert caplog.text == ""  # no state: a fresh run, nothing said
        save_state(state, {"step": 30, "losses": [1.0]})
        assert load_state(state, 80)["step"] == 30
    assert caplog.messages == [f"resuming from step 30 of 80 saved in {state} (an interrupted run); delete that "
                               "file to start afresh"]


@pytest.mark.parametrize(("cls", "config"), [(NetVLADMethod, TINY_NETVLAD), (MSCFPMethod, TINY_MSCFP)])
def test_every_trainable_part_gets_a_gradient(cls, config):
    torch.manual_seed(0)
    model = cls(config)
    for module in model.modules():  # timm zero-initialises each residual block's last BN scale, which would
        if isinstance(module, torch.nn.BatchNorm2d):  # hold back the block's other gradients until a step is made
            torch.nn.init.ones_(module.weight)
    params = _trainable_parameters(model, "")
    images = torch.randn(3, 3, 96, 128)
    embedded = model.aggregate(images)
    triplet_loss(embedded[0], embedded[1], embedded[2:], margin=10.0).backward()
    named = {id(p): n for n, p in model.named_parameters()}
    missing = [named[id(p)] for p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "whitening.linear.weight", "whitening.linear.bias"}  # fitted after training, not trained


@pytest.mark.parametrize(("cls", "config"), [(NetVLADMethod, TINY_NETVLAD), (MSCFPMethod, TINY_MSCFP)])
def test_descriptors_unit_norm_batch_invariant_and_deterministic(cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
    images = torch.randn(4, 3, 96, 128)
    with torch.no_grad():
        batch = model(images)
        single = torch.cat([model(images[i:i + 1]) for i in range(4)])
        again = model(images)
    assert batch.shape == (4, 16)
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
    assert torch.equal(batch, again)


def test_mscfp_local_descriptors_are_pooled_columns_cut_in_parts():
    torch.manual_seed(0)
    model = MSCFPMethod(TINY_MSCFP).eval()
    paper = MSCFPMethod(dataclasses.replace(TINY_MSCFP, part_normalisation=False)).eval()
    paper.load_state_dict(model.state_dict())
    images = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        local, whole = model.local_descriptors(images), paper.local_descriptors(images)
        columns = stride1_max_pool_columns(model.backbone(images)[-1], (2, 3))
    # resnet18 conv5 of 96 x 128 is 3 x 4: 2 x 2 windows give 2 x 3 columns, 3 x 3 give 1 x 2; 512 = 4 x 128.
    assert local.shape == whole.shape == (1, 128, (6 + 2) * 4)
    # the authors' code: each 128-D part of a column to unit norm; the paper's reading: the whole column
    torch.testing.assert_close(local.norm(dim=1), torch.ones(1, 32))
    norms = whole.reshape(1, 128, 4, 8).pow(2).sum(dim=(1, 2)).sqrt()
    torch.testing.assert_close(norms, torch.ones(1, 8))
    parts = split_columns(columns, 128)
    torch.testing.assert_close(local, parts / parts.norm(dim=1, keepdim=True))
    torch.testing.assert_close(whole, split_columns(columns / columns.norm(dim=1, keepdim=True), 128))


def _cli(*args: str, env: dict[str, str] | None = None, launcher: tuple[str, ...] = (sys.executable,)
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*launcher, "-m", "benchmarks", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def _train_args(root: Path, out: Path) -> list[str]:
    return ["train", "netvlad", "--dataset", "synth_places", "--steps", "2", "--seed", "1", "--init", "none",
            *CLI_CONFIG, "--set", "cache_refresh=4", "--set", "n_sampled_negatives=20", "--set", "tuples_per_batch=2",
            "--set", "train_from=layer3", "--set", "cluster_images=20", "--name", "resnet18.test",
            "--out", str(out), "--root", str(root)]


@pytest.mark.slow
def test_cli_trains_saves_and_evaluates(embedded_root, tmp_path):
    out = tmp_path / "w.pt"
    done = _cli(*_train_args(embedded_root, out), "--val-split", "val")
    assert done.returncode == 0, done.stderr
    assert f"{out}: netvlad resnet18.test, sha256 " in done.stdout
    assert not Path(f"{out}.state").exists()
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert {"trained_on", "round_losses"} <= set(sidecar["origin"])
    assert [v["step"] for v in sidecar["origin"]["validation"]] == [2]  # the run ends within its first epoch
    assert sidecar["origin"]["selected_step"] == 2
    done = _cli("evaluate", "--method", "netvlad", "--weights", str(out), "--dataset", "synth_places",
                "--dataset", "synth_landmarks", "--root", str(embedded_root), "--results", str(tmp_path / "res"),
                "--allow-dirty")  # tests run on uncommitted trees too
    assert done.returncode == 0, done.stderr
    places = load_result(tmp_path / "res" / "synth_places" / "netvlad" / "resnet18.test.json")
    landmarks = load_result(tmp_path / "res" / "synth_landmarks" / "netvlad" / "resnet18.test.json")
    assert places.protocol == "recall" and set(places.metrics) == {"recall@1", "recall@5", "recall@10", "recall@20"}
    assert landmarks.config["protocol"]["queries_cropped"] is True
    assert len(landmarks.per_query["ap_medium"]) == 20 and len(places.per_query["first_hit"]) == 60
    assert places.provenance.weights_sha256 == load_checkpoint(NetVLADMethod, out).sha256
    assert places.config["descriptor_dim"] == 16


@pytest.mark.slow
def test_a_training_run_on_a_busy_machine_gives_the_weights_of_one_on_an_idle_machine(embedded_root, tmp_path):
    """Nothing in training depends on timing: with both cores taken by other processes (the regression's
    drift under load, issue 22), the same command gives the same weights, every tensor bit for bit."""
    idle, busy = tmp_path / "idle.pt", tmp_path / "busy.pt"
    assert _cli(*_train_args(embedded_root, idle)).returncode == 0
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(2, os.cpu_count() or 2))]
    try:
        done = _cli(*_train_args(embedded_root, busy))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_checkpoint(NetVLADMethod, idle).model.state_dict()
    b = load_checkpoint(NetVLADMethod, busy).model.state_dict()
    assert list(a) == list(b) and "whitening.linear.weight" in a and "vlad.centroids" in a
    assert [name for name in a if not torch.equal(a[name], b[name])] == []


@pytest.mark.slow
def test_torchrun_two_processes_train_the_same_weights(embedded_root, tmp_path):
    single, double = tmp_path / "one.pt", tmp_path / "two.pt"
    assert _cli(*_train_args(embedded_root, single)).returncode == 0
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    done = _cli(*_train_args(embedded_root, double), launcher=torchrun, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    a = dict(load_checkpoint(NetVLADMethod, single).model.named_parameters())
    b = dict(load_checkpoint(NetVLADMethod, double).model.named_parameters())
    # Trained parameters agree. On CPU each process keeps its own batch-norm running statistics (SyncBatchNorm
    # is CUDA-only), so the whitening, fitted afterwards on descriptors that use them, is not compared.
    compared = [name for name in a if not name.startswith("whitening.")]
    assert "vlad.centroids" in compared and "backbone.layer3.1.conv2.weight" in compared
    for name in compared:
        torch.testing.assert_close(b[name], a[name], atol=2e-4, rtol=1e-3, msg=name)


def test_learning_rate_halves_every_five_epochs_as_in_netvlad():
    recipe = NetVLADMethod.recipe
    assert recipe.lr_halving_epochs == 5
    assert [_learning_rate(recipe, e) for e in (0, 4.99, 5, 9.9, 10, 15)] == \
        pytest.approx([1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5, 1.25e-5])
    assert _learning_rate(TripletRecipe(mining="classes", lr=1e-5), 100.0) == 1e-5  # no schedule: constant


def test_validation_keeps_the_weights_of_the_best_recall_at_5(embedded_root):
    torch.manual_seed(0)
    model = NetVLADMethod(TINY_NETVLAD)
    val = load_datasets().get("synth_places")().load(embedded_root, "val")
    recipe, report, cpu = NetVLADMethod.recipe, {}, torch.device("cpu")
    trunk = model.backbone.conv1.weight
    original = trunk.detach().clone()
    with torch.no_grad():
        trunk.zero_()   # constant features: every image gets the same descriptor, ranked by database index
    blind = _validate(model, val, recipe, cpu, 10, report, None)
    assert blind is not None and torch.equal(blind["backbone.conv1.weight"], torch.zeros_like(original))
    with torch.no_grad():
        trunk.copy_(original)
    seeing = _validate(model, val, recipe, cpu, 20, report, blind)
    assert seeing is not blind and torch.equal(seeing["backbone.conv1.weight"], original)
    assert seeing["backbone.conv1.weight"] is not trunk.data  # a copy, not the live weights
    assert _validate(model, val, recipe, cpu, 30, report, seeing) is seeing  # equal: the earliest stays
    assert [v["step"] for v in report["validation"]] == [10, 20, 30]
    recalls = [v["recall@5"] for v in report["validation"]]
    assert recalls[0] < recalls[1] == recalls[2]


def _places_report(root: Path, steps: int, **recipe_fields: object) -> dict:
    torch.manual_seed(0)
    recipe = dataclasses.replace(NetVLADMethod.recipe, **{**PLACES_RECIPE, **recipe_fields})
    split = load_datasets().get("synth_places")().load(root, "val")
    return train(NetVLADMethod(TINY_NETVLAD), split, recipe, TrainOptions(steps=steps, seed=3))


def test_a_learned_split_stops_training_after_a_quiet_epoch(embedded_root):
    # margin -10: no negative can violate it, as when the network already separates every training query
    report = _places_report(embedded_root, 5, margin=-10.0, cache_refresh=1000)
    assert report["steps"] == 0 and report["rounds"] == 1 and report["round_losses"] == [None]
    assert report["stopped_early"].startswith("no training tuple violated the margin in rounds 1-1")


def test_a_round_s_last_partial_batch_makes_a_step(embedded_root):
    # two queries per round, four tuples per batch: before, no round could ever fill a batch
    report = _places_report(embedded_root, 2, cache_refresh=2, tuples_per_batch=4, margin=10.0)
    assert report["steps"] == 2 and report["rounds"] == 2 and "stopped_early" not in report


def test_a_split_that_cannot_give_a_tuple_is_refused_before_any_work(embedded_root):
    split = load_datasets().get("synth_landmarks")().load(embedded_root, "train")
    singletons = dataclasses.replace(split, ground_truth=dataclasses.replace(
        split.ground_truth, labels=np.arange(len(split.db_paths))))
    with pytest.raises(InputError, match="no class has two images"):
        train(MSCFPMethod(TINY_MSCFP), singletons, MSCFPMethod.recipe, TrainOptions(steps=1))


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 2])
def test_a_signal_stops_the_run_after_the_step_keeping_the_last_saved_round(embedded_root, tmp_path, monkeypatch,
                                                                             caplog, at):
    from benchmarks.training import triplet as train_module

    state, real_step, steps_done = tmp_path / "run.state", train_module._step, []

    def step_then_signal(*args, **kwargs):
        steps_done.append(1)
        if len(steps_done) == at:  # a round is 4 tuples, 2 per step: step 1 is mid-round, step 2 ends it
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", step_then_signal)
    with pytest.raises(KeyboardInterrupt):
        _places_run(embedded_root, 6, state)
    assert len(steps_done) == at
    if at == 1:  # mid-round: the round cannot be resumed from its middle, and no round was saved before it
        assert not state.exists() and "interrupted at step 1 of 6; no state file: nothing is kept" in caplog.text
    else:  # the round's last step: the round is saved, then the run stops
        assert torch.load(state, weights_only=True)["step"] == 2
        assert f"interrupted at step 2 of 6; the state of step 2 is in {state}: the same command resumes" in \
            caplog.text
