"""REMAP: KL-divergence weights on distance distributions built here, non-negative weights under optimiser steps,
the descriptor against its definition (weighted sums of normalised region maxima, MS-REMAP's eq. 3), and the
training loop's initialisation hook end to end on a tiny class-labelled split."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.evaluation.extract import load_image
from benchmarks.training.common import TrainOptions
from benchmarks.training.triplet import _trainable_parameters, train
from datasets.base import ClassLabels, LoadedDataset, PlaceGroundTruth
from methods.layers.entropy_weighting import SMALLEST_WEIGHT, RegionWeights, histogram_kl_divergence
from methods.layers.regions import rmac_regions
from methods.losses import triplet_loss
from methods.remap import REMAPConfig, REMAPMethod

TINY = REMAPConfig(backbone="resnet18", layers=(4, 3), region_levels=2, whiten_dim=8)


def test_kl_divergence_is_larger_for_well_separated_distance_distributions():
    rng = np.random.default_rng(0)
    n = 20000
    matching = np.stack([rng.normal(0.5, 0.05, n), rng.normal(0.70, 0.1, n), rng.normal(0.8, 0.1, n)], axis=1)
    non_matching = np.stack([rng.normal(0.9, 0.05, n), rng.normal(0.75, 0.1, n), rng.normal(0.8, 0.1, n)], axis=1)
    kl = histogram_kl_divergence(matching, non_matching, bins=25)
    assert kl[0] > 5 * kl[1] > 5 * kl[2]
    # two Gaussians of equal sigma: KL = (mu_1 - mu_2)^2 / (2 sigma^2) = 0.125 nats
    assert kl[1] == pytest.approx(0.125, abs=0.03)
    assert 0 <= kl[2] < 0.01
    assert kl[0] > 3  # almost disjoint: bounded only by the histograms' pseudo-counts


def test_kl_divergence_is_relative_entropy_of_matching_to_non_matching():
    # Hand-computed: two bins over [0, 1]; matching 3 + 0.5 / 1 + 0.5 pseudo-counts, non-matching 1.5 / 3.5.
    kl = histogram_kl_divergence(np.array([[0.0], [0.1], [0.2], [1.0]]), np.array([[0.0], [0.9], [1.0], [1.0]]), 2)
    p, q = np.array([3.5, 1.5]) / 5, np.array([1.5, 3.5]) / 5
    assert kl[0] == pytest.approx(float(np.sum(p * np.log(p / q))))
    with pytest.raises(ValueError):
        histogram_kl_divergence(np.zeros((0, 1)), np.zeros((3, 1)), 5)


def test_region_weights_start_at_one_and_take_the_divergences():
    weights = RegionWeights(2, 3)
    torch.testing.assert_close(weights.alpha, torch.ones(2, 3))
    weights.initialise(np.array([[7.4, 0.0, 1.2], [1e-6, 30.0, 0.5]]))
    torch.testing.assert_close(weights.alpha, torch.tensor([[7.4, SMALLEST_WEIGHT, 1.2], [SMALLEST_WEIGHT, 30.0, 0.5]]))
    with pytest.raises(ValueError):
        weights.initialise(np.ones((3, 2)))


@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_region_weights_stay_non_negative_when_every_step_pushes_them_down(optimiser):
    weights = RegionWeights(2, 5)
    weights.initialise(np.array([[0.01, 0.5, 1.0, 4.0, 8.0], [SMALLEST_WEIGHT, 2.0, 3.0, 0.2, 6.0]]))
    start = weights.alpha.detach().clone()
    step = (torch.optim.SGD(weights.parameters(), lr=50.0) if optimiser == "sgd"
            else torch.optim.Adam(weights.parameters(), lr=2.0))
    regions = torch.ones(1, 5, 3)
    for _ in range(25):
        step.zero_grad()
        (100 * weights(regions, 0).sum() + 100 * weights(regions, 1).sum()).backward()  # lower = smaller weights
        step.step()
        assert (weights.alpha >= 0).all()
    assert (weights.alpha < start).all() and weights.alpha.max() < 0.5


def _tiny_model(config: REMAPConfig = TINY) -> REMAPMethod:
    torch.manual_seed(0)
    return REMAPMethod(config).eval()


def test_aggregate_is_the_weighted_sum_of_normalised_region_maxima_per_layer():
    model = _tiny_model(dataclasses.replace(TINY, whiten_dim=None))
    model.region_weights.initialise(np.arange(1, 17, dtype=np.float64).reshape(2, 8))
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        layer3, layer4 = model.backbone(images)            # the trunk's maps in depth order
        expected = []
        for stream, features in enumerate((layer4, layer3)):  # config layers (4, 3): the last layer first
            grid = rmac_regions(*features.shape[-2:], 2, long_side_count=2)
            assert len(grid) == 8
            total = 0
            for r, (top, left, side) in enumerate(grid):
                pooled = features[:, :, top:top + side, left:left + side].amax(dim=(2, 3))
                total = total + (stream * 8 + r + 1) * F.normalize(pooled, dim=1)
            expected.append(total)
        torch.testing.assert_close(model.aggregate(images), F.normalize(torch.cat(expected, dim=1), dim=1))
        assert model.descriptor_dim == 512 + 256


def test_descriptors_unit_norm_batch_invariant_and_ms_remap_is_eq_3():
    single = _tiny_model()
    multi = REMAPMethod(dataclasses.replace(TINY, resolutions=(1.0, 1.25), resolution_weights=(2.0, 1.4))).eval()
    with torch.no_grad():
        single.whitening.linear.weight.normal_()  # type: ignore[union-attr]
    multi.load_state_dict(single.state_dict())
    images = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        out = single(images)
        assert out.shape == (3, 8)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(torch.cat([single(images[i:i + 1]) for i in range(3)]), out, atol=1e-5, rtol=0)
        larger = F.interpolate(images, scale_factor=1.25, mode="bilinear", align_corners=False)
        torch.testing.assert_close(multi(images), F.normalize(2.0 * out + 1.4 * single(larger), dim=1))
    with pytest.raises(ValueError):
        REMAPConfig(resolutions=(1.0, 1.25), resolution_weights=(1.0,))


def test_every_trainable_part_gets_a_gradient():
    model = _tiny_model().train()
    for module in model.modules():  # timm zero-initialises each block's last BN scale (see test_train.py)
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    params = _trainable_parameters(model, "")
    embedded = model.aggregate(torch.randn(3, 3, 64, 96))
    triplet_loss(embedded[0], embedded[1], embedded[2:], margin=10.0).backward()
    named = {id(p): n for n, p in model.named_parameters()}
    assert not [named[id(p)] for p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert "region_weights.theta" in {named[id(p)] for p in params}


def _class_split(folder: Path, classes: int = 4, per_class: int = 4) -> LoadedDataset:
    """Images of ``classes`` random patterns, each seen ``per_class`` times with noise and a shift."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for c in range(classes):
        pattern = rng.uniform(0, 255, (6, 8, 3))
        for i in range(per_class):
            image = np.kron(pattern, np.ones((8, 8, 1)))
            image = np.roll(image, i * 3, axis=1) + rng.normal(0, 20, image.shape)
            path = folder / f"c{c}_{i}.png"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
            paths.append(path)
            labels.append(c)
    return LoadedDataset(tuple(paths), (), ClassLabels(np.array(labels, dtype=np.int64)))


def test_training_initialises_weights_with_kl_divergences_then_keeps_them_non_negative(tmp_path):
    split = _class_split(tmp_path)
    recipe = dataclasses.replace(REMAPMethod.recipe, mining_classes=4, mining_batch=16, cluster_images=16,
                                 tuples_per_batch=2, cache_refresh=2, optimizer="sgd", lr=0.5, batch_size=8)
    model = _tiny_model()
    report = train(model, split, recipe, TrainOptions(steps=0, seed=1))
    init = report["initialisation"]
    assert (init["matching_pairs"], init["non_matching_pairs"]) == (4 * 6, 16 * 15 // 2 - 24)

    # The same divergences from distances computed here, image by image.
    model.eval()
    with torch.no_grad():
        streams = [[s[0] for s in model.region_descriptors(load_image(p, model.protocol)[None])]
                   for p in split.db_paths]  # per image, per stream (R, C_s)
    labels = split.ground_truth.labels  # type: ignore[union-attr]
    pairs = [(a, b) for a in range(16) for b in range(a + 1, 16)]
    distances = np.array([torch.cat([(x - y).norm(dim=1) for x, y in zip(streams[a], streams[b], strict=True)])
                          .numpy() for a, b in pairs])
    same = np.array([labels[a] == labels[b] for a, b in pairs])
    kl = histogram_kl_divergence(distances[same], distances[~same], TINY.kl_bins)
    np.testing.assert_allclose(model.region_weights.alpha.detach().numpy().ravel(),
                               np.maximum(kl, SMALLEST_WEIGHT), rtol=1e-4, atol=1e-5)
    assert kl.std() > 0.01  # the regions differ

    initial = model.region_weights.alpha.detach().clone()
    train(model, split, recipe, TrainOptions(steps=3, seed=1))
    assert (model.region_weights.alpha >= 0).all()
    assert not torch.allclose(model.region_weights.alpha, initial)


def test_kl_weights_need_class_labels(tmp_path):
    split = LoadedDataset((), (), PlaceGroundTruth(np.zeros((0, 2)), np.zeros((0, 2))))
    with pytest.raises(ValueError, match="labelled by class"):
        _tiny_model().initialisation_input(split, REMAPMethod.recipe, lambda f, p: np.zeros(0), 0)
