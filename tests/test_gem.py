"""GeM: pooling and contrastive loss against hand-computed values, the learned whitening's defining property, the
converter on a checkpoint in the authors' layout (key names, numpy Lw in meta) against the reference computation,
and train --steps 0 then evaluate through the CLI."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.core.errors import InputError
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.core.timm_import import import_timm
from benchmarks.evaluation.results import load_result
from benchmarks.training.triplet import _learning_rate
from methods.gem import (
    GeMConfig,
    GeMMethod,
    cirtorch_name,
    convert_cirtorch_checkpoint,
    learn_whitening,
    read_cirtorch_checkpoint,
)
from methods.layers.gem import GeM
from methods.losses import contrastive_loss
from methods.weights import load_checkpoint

TINY = GeMConfig(backbone="resnet18")


def test_gem_pooling_is_the_generalised_mean_of_each_map():
    maps = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-5.0, 0.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    pooled = GeM(3.0)(maps)
    # channel 0: ((1 + 8 + 27 + 64) / 4) ** (1/3) = 25 ** (1/3); channel 1: negatives clamp to 1e-6, (16/4) ** (1/3)
    assert pooled[0].tolist() == pytest.approx([25 ** (1 / 3), 4 ** (1 / 3)], rel=1e-5)
    assert GeM(1.0)(maps)[0, 0].item() == pytest.approx(2.5)


def test_contrastive_loss_by_hand():
    anchor, positive = torch.tensor([1.0, 0.0]), torch.tensor([0.6, 0.8])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # d(a, p)^2 = 0.16 + 0.64 = 0.8; d(a, n1) = sqrt(2) > 0.85 adds nothing; d(a, n2) = 2 adds nothing
    assert contrastive_loss(anchor, positive, negatives, margin=0.85, eps=0).item() == pytest.approx(0.4)
    # margin 1.5: the first negative adds 0.5 (1.5 - sqrt 2)^2
    assert contrastive_loss(anchor, positive, negatives, margin=1.5, eps=0).item() == \
        pytest.approx(0.4 + 0.5 * (1.5 - math.sqrt(2)) ** 2)


def test_recipe_is_the_authors_and_its_lr_decays_by_exp_minus_0_01_per_epoch():
    recipe = GeMMethod.recipe
    assert (recipe.loss, recipe.margin, recipe.optimizer, recipe.lr, recipe.weight_decay) == \
        ("contrastive", 0.85, "adam", 5e-7, 1e-6)
    assert _learning_rate(recipe, 2.5) == pytest.approx(5e-7 * math.exp(-0.02))


def test_learned_whitening_whitens_the_pairs_differences_and_decorrelates_the_data():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 6)) * [5, 3, 2, 1, 1, 0.5]
    queries, positives = np.arange(0, 200, 2), np.arange(1, 200, 2)
    mean, projection = learn_whitening(data, queries, positives)
    differences = (data[queries] - data[positives]) @ projection.T.astype(np.float64)
    np.testing.assert_allclose(differences.T @ differences / len(differences), np.eye(6), atol=1e-4)
    whitened = (data - mean) @ projection.T.astype(np.float64)
    scatter = whitened.T @ whitened
    np.testing.assert_allclose(scatter - np.diag(np.diag(scatter)), 0, atol=1e-2)
    assert np.all(np.diff(np.diag(scatter)) <= 0)  # components by decreasing variance
    np.testing.assert_allclose(mean, data[queries].mean(axis=0), rtol=1e-6)


def _authors_layout_file(path, with_lw=True):
    """A checkpoint as cnnimageretrieval-pytorch saves it, for a ResNet-18 trunk: the torchvision children list
    without its last two (avgpool, fc) as ``features``, ``pool.p``, and meta with mean/std and numpy Lw."""
    torch.manual_seed(1)
    resnet = import_timm().create_model("resnet18")
    for module in resnet.modules():  # non-trivial batch-norm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    features = nn.Sequential(*list(resnet.children())[:-2])
    state = {f"features.{k}": v for k, v in features.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["pool.p"] = torch.tensor([2.8])
    rng = np.random.default_rng(2)
    lw = {kind: {"m": rng.normal(size=(512, 1)) * 0.01, "P": rng.normal(size=(512, 512)) / 20} for kind in ("ss", "ms")}
    meta = {"architecture": "resnet18", "pooling": "gem", "whitening": False, "regional": False,
            "local_whitening": False, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "outputdim": 512}
    if with_lw:
        meta["Lw"] = {"retrieval-SfM-120k": lw}
    torch.save({"state_dict": state, "meta": meta, "epoch": 0}, path)
    return features.eval(), lw["ms"]


def test_converter_maps_the_authors_layout_and_matches_their_computation(tmp_path):
    path = tmp_path / "retrievalSfM120k-resnet18-gem.pth"
    features, lw = _authors_layout_file(path)
    model = GeMMethod.convert_weights(path, GeMConfig()).eval()  # the default resnet101 gives way to the file's
    assert model.config.backbone == "resnet18" and model.gem.p.item() == pytest.approx(2.8)
    assert model.protocol.mean == (0.5, 0.4, 0.3) and model.protocol.std == (0.2, 0.25, 0.3)
    images = torch.randn(2, 3, 96, 80)
    with torch.no_grad():  # the reference: extract_ms with msp = p, then whitenapply
        total = 0
        for scale in (1, 1 / math.sqrt(2), 0.5):
            x = images if scale == 1 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                       align_corners=False)
            pooled = features(x).clamp(min=1e-6).pow(2.8).mean(dim=(2, 3)).pow(1 / 2.8)
            total = total + F.normalize(pooled, dim=1).pow(2.8)
        ms = F.normalize((total / 3).pow(1 / 2.8), dim=1).double()
        expected = F.normalize((ms - torch.from_numpy(lw["m"][:, 0])) @ torch.from_numpy(lw["P"]).T, dim=1)
        torch.testing.assert_close(model(images).double(), expected, atol=2e-5, rtol=1e-4)
    assert cirtorch_name("backbone.layer4.1.bn2.running_var") == "features.7.1.bn2.running_var"


def test_converter_names_every_problem(tmp_path):
    path = tmp_path / "bad.pth"
    _authors_layout_file(path, with_lw=False)
    with pytest.raises(InputError, match=r"Lw\['retrieval-SfM-120k'\]\['ms'\]"):
        GeMMethod.convert_weights(path, GeMConfig())
    assert GeMMethod.convert_weights(path, GeMConfig(whitening=False)).whitening is None
    payload = read_cirtorch_checkpoint(path)
    del payload["state_dict"]["features.7.1.conv2.weight"]
    payload["state_dict"]["features.9.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing: features\.7\.1\.conv2\.weight[\s\S]*unused: features\.9\.weight"):
        convert_cirtorch_checkpoint(GeMMethod, payload, GeMConfig(whitening=False), path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(InputError, match="cnnimageretrieval-pytorch checkpoint"):
        GeMMethod.convert_weights(path, GeMConfig())


@pytest.mark.slow
def test_cli_trains_zero_steps_on_synth_landmarks_and_evaluates(embedded_root, tmp_path):
    out = tmp_path / "gem.pt"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "benchmarks", *args, "--root", str(embedded_root)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    done = cli("train", "gem", "--dataset", "synth_landmarks", "--steps", "0", "--init", "none",
               "--config", "backbone=resnet18", "--name", "resnet18.test", "--out", str(out))
    assert done.returncode == 0, done.stderr
    trained = load_checkpoint(GeMMethod, out).model
    assert trained.config == TINY
    assert not torch.equal(trained.whitening.weight, torch.eye(512))  # Lw fitted on the training classes
    done = cli("evaluate", "--method", "gem", "--weights", str(out), "--dataset", "synth_landmarks",
               "--results", str(tmp_path / "res"), "--allow-dirty")
    assert done.returncode == 0, done.stderr
    result = load_result(tmp_path / "res" / "synth_landmarks" / "gem" / "resnet18.test.json")
    assert result.config["descriptor_dim"] == 512 and len(result.per_query["ap_medium"]) == 20
    assert 0 < result.metrics["map_medium"] <= 1
