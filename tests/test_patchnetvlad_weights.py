"""Patch-NetVLAD's released NetVLAD weights: the converter on files in the released layout, and the golden test of
our plugin against Patch-NetVLAD's own forward (``tests/data/patchnetvlad_reference.json``, see SOURCES.md)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch

from benchmarks.core.errors import InputError
from benchmarks.evaluation.extract import extract
from methods.base import IMAGENET_MEAN, IMAGENET_STD
from methods.netvlad import NetVLADConfig, NetVLADMethod
from methods.patchnetvlad_weights import SHA256, cluster_major_to_dimension_major, read_release
from methods.weights import resolve_weights
from tests.patchnetvlad_release import released_state, write_release

REFERENCE = Path(__file__).parent / "data" / "patchnetvlad_reference.json"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_release(tmp_path_factory.mktemp("release") / "pitts_WPCA128.pth.tar", seed=0, num_pcs=128)


def test_our_plugin_gives_patchnetvlads_descriptor_of_a_real_photo(release, tmp_path):
    reference = json.loads(REFERENCE.read_text())
    loaded = resolve_weights(NetVLADMethod, str(release), tmp_path / "data")
    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    ours = extract(loaded.model, [photo], loaded.model.protocol)[0].astype(np.float64)
    theirs = np.asarray(reference["descriptor"])
    assert ours.shape == theirs.shape == (128,)
    assert float(ours @ theirs) >= 0.99999
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)


def test_converted_model_holds_the_files_tensors_in_our_layout(release):
    state = released_state(seed=0, num_pcs=128)
    model = NetVLADMethod.convert_weights(release, NetVLADConfig())
    assert (model.config.num_clusters, model.config.whiten_dim, model.config.assignment_bias) == (64, 128, False)
    assert model.protocol.mean == IMAGENET_MEAN and model.protocol.std == IMAGENET_STD
    params = dict(model.named_parameters())
    assert torch.equal(params["backbone.features_28.weight"], state["encoder.28.weight"])
    assert torch.equal(params["backbone.features_0.bias"], state["encoder.0.bias"])
    assert torch.equal(model.vlad.centroids, state["pool.centroids"])
    assert torch.equal(model.vlad.assignment.weight, state["pool.conv.weight"][:, :, 0, 0])
    wpca = state["WPCA.0.weight"][:, :, 0, 0]  # (128, 64 * 512) float64, column k * 512 + d
    k, d = 5, 300
    assert model.whitening.linear.weight[17, d * 64 + k] == wpca[17, k * 512 + d].float()
    assert torch.equal(model.whitening.linear.bias, state["WPCA.0.bias"].float())


def test_the_reorder_makes_our_dimension_major_vlad_meet_their_cluster_major_whitening():
    generator = torch.Generator().manual_seed(0)
    k, d, p = 4, 6, 3
    theirs_vector = torch.randn(k * d, generator=generator, dtype=torch.float64)    # index k * D + d
    ours_vector = theirs_vector.reshape(k, d).T.flatten()                            # index d * K + k
    weight = torch.randn(p, k * d, generator=generator, dtype=torch.float64)
    reordered = cluster_major_to_dimension_major(weight, k)
    torch.testing.assert_close(reordered @ ours_vector, weight @ theirs_vector, rtol=0, atol=1e-12)
    assert not torch.allclose(weight @ ours_vector, weight @ theirs_vector)


def test_float16_whitening_of_the_mapillary_files_is_read(tmp_path):
    path = write_release(tmp_path / "mapillary_WPCA8.pth.tar", seed=1, num_pcs=8, wpca_dtype=torch.float16)
    release = read_release(path)
    assert release.num_pcs == 8 and release.whitening is not None and release.whitening[0].dtype == torch.float32
    assert len(release.convolutions) == 13 and release.assignment_bias is None


def _broken(tmp_path: Path, change) -> Path:
    payload = {"num_pcs": 8, "state_dict": released_state(seed=2, num_pcs=8)}
    change(payload)
    torch.save(payload, tmp_path / "broken.pth.tar")
    return tmp_path / "broken.pth.tar"


@pytest.mark.parametrize("change, message", [
    (lambda p: p["state_dict"].pop("pool.centroids"), "no pool.centroids"),
    (lambda p: p["state_dict"].update({"WPCA.0.bias": torch.zeros(7)}), r"WPCA\.0\.weight \(8, 32768, 1, 1\)"),
    (lambda p: p.update(num_pcs=4096), "num_pcs 4096 differs from WPCA.0.weight's 8"),
    (lambda p: p["state_dict"].update({"head.weight": torch.zeros(2)}), r"unexpected tensors \['head.weight'\]"),
    (lambda p: p["state_dict"].pop("encoder.26.bias"), "without weight or bias: encoder.26.bias"),
    (lambda p: p.update(state_dict=[1, 2]), "no 'state_dict' mapping"),
])
def test_a_broken_release_is_refused_naming_the_problem(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        NetVLADMethod.convert_weights(_broken(tmp_path, change), NetVLADConfig())


def test_the_six_released_files_are_named_weights_with_pinned_sha256():
    named = {name: spec for name, spec in NetVLADMethod.weights.items() if name.startswith("vgg16.patchnetvlad_")}
    assert len(named) == len(SHA256) == 6
    spec = named["vgg16.patchnetvlad_pitts_4096"]
    assert spec.url == "https://huggingface.co/TobiasRobotics/Patch-NetVLAD/resolve/main/pitts_WPCA4096.pth.tar"
    assert spec.sha256 == "2c3cf17de91974156cb6aee40a6f7a229825095273d7de87c0792084ae1bf4aa"
    assert dict(spec.config) == {"whiten_dim": 4096}
    assert {dict(s.config)["whiten_dim"] for s in named.values()} == {128, 512, 4096}
