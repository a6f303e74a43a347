"""The MatConvNet struct converter of NetVLAD's released weights, and weights files in general.

The test writes a .mat in the released layout (``net.layers``: convolutions, ReLUs and poolings, the L2
layer, the VLAD layer with its assignment and *negated* centroids, normalisations, the whitening as a
1 x 1 convolution; ``net.meta.normalization.averageImage``) for a VGG-11 trunk (VGG-16's layout with fewer
convolutions, to keep the file small), and checks the converted model against a direct computation from
those arrays: MatConvNet's layers interpreted one by one, VLAD summed cluster by cluster.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from benchmarks.core.errors import InputError
from methods.base import WeightsSpec
from methods.netvlad import NetVLADConfig, NetVLADMethod, convert_matconvnet_struct
from methods.weights import load_checkpoint, resolve_weights, save_checkpoint
from tests.loopback import LoopbackServer

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]  # conv5_2 is the last, taken before its ReLU
K, OUT = 4, 8
AVERAGE = np.array([122.7, 114.9, 101.6], dtype=np.float32)
CONFIG = {"backbone": "vgg11", "num_clusters": K, "whiten_dim": OUT}


def _layer(kind: str, name: str, weights: list[np.ndarray]) -> dict:
    cell = np.empty(len(weights), dtype=object)
    cell[:] = weights
    return {"type": kind, "name": name, "weights": cell}


def _released_layers(rng: np.random.Generator) -> list[dict]:
    layers, channels = [], 3
    for i, item in enumerate(VGG11):
        if item == "M":
            layers.append(_layer("pool", f"pool{i}", []))
            continue
        kernel = rng.normal(0, np.sqrt(2 / (9 * channels)), (3, 3, channels, item)).astype(np.float32)
        layers.append(_layer("conv", f"conv{i}", [kernel, rng.normal(0, 0.01, item).astype(np.float32)]))
        layers.append(_layer("relu", f"relu{i}", []))
        channels = item
    layers.pop()  # the last ReLU: NetVLAD crops at conv5 before it
    d = channels
    centroids = rng.normal(0, 1, (d, K)).astype(np.float32)
    layers += [_layer("normalize", "preL2", []),
               _layer("custom", "vlad:core", [rng.normal(0, 1, (1, 1, d, K)).astype(np.float32), -centroids]),
               _layer("normalize", "vlad:intranorm", []), _layer("normalize", "postL2", []),
               _layer("conv", "WPCA", [rng.normal(0, 0.1, (1, 1, K * d, OUT)).astype(np.float32),
                                       rng.normal(0, 0.1, OUT).astype(np.float32)]),
               _layer("normalize", "finalL2", [])]
    return layers


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    rng = np.random.default_rng(7)
    layers = _released_layers(rng)
    cell = np.empty(len(layers), dtype=object)
    cell[:] = layers
    path = tmp_path_factory.mktemp("mat") / "Test_struct.mat"
    scipy.io.savemat(path, {"net": {"layers": cell, "meta": {"normalization": {
        "averageImage": AVERAGE.reshape(1, 1, 3)}}}})
    return path, layers


def _direct(layers: list[dict], image_255: np.ndarray) -> np.ndarray:
    """MatConvNet's forward pass, layer by layer, from the arrays alone: (3, H, W) 0..255 -> (OUT,)."""
    x = torch.from_numpy(image_255 - AVERAGE[:, None, None])[None].double()
    for layer in layers:
        kind, weights = layer["type"], list(layer["weights"])
        if kind == "conv" and layer["name"] != "WPCA":
            kernel = torch.from_numpy(weights[0]).double().permute(3, 2, 0, 1)
            x = F.conv2d(x, kernel, torch.from_numpy(weights[1]).double(), padding=1)
        elif kind == "relu":
            x = torch.relu(x)
        elif kind == "pool":
            x = F.max_pool2d(x, 2, 2)
        elif layer["name"] == "vlad:core":
            break
    local = x[0].flatten(1).numpy()                      # (D, N)
    local = local / np.linalg.norm(local, axis=0)       # preL2
    assignment = weights[0].reshape(-1, K).astype(np.float64)   # (D, K)
    centroids = -weights[1].astype(np.float64)                  # stored negated
    vlad = np.zeros((local.shape[0], K))
    for i in range(local.shape[1]):
        scores = assignment.T @ local[:, i]
        soft = np.exp(scores - scores.max())
        soft /= soft.sum()
        for k in range(K):
            vlad[:, k] += soft[k] * (local[:, i] - centroids[:, k])
    vlad /= np.linalg.norm(vlad, axis=0)                 # intra-normalisation
    vector = vlad.reshape(-1)                            # MatConvNet's order: index d * K + k
    vector /= np.linalg.norm(vector)
    whitening = layers[-2]["weights"]
    out = whitening[0].reshape(-1, OUT).T.astype(np.float64) @ vector + whitening[1]
    return out / np.linalg.norm(out)


def test_converted_model_gives_the_direct_computation(released):
    path, layers = released
    model = convert_matconvnet_struct(NetVLADMethod, path, NetVLADConfig(**CONFIG)).eval()
    assert model.protocol.mean == pytest.approx(tuple(AVERAGE / 255))
    assert model.protocol.std == pytest.approx((1 / 255,) * 3)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (2, 3, 64, 80)).astype(np.float32)
    mean = torch.tensor(model.protocol.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.protocol.std).view(1, 3, 1, 1)
    with torch.no_grad():
        got = model((torch.from_numpy(images) - mean) / std).numpy()
    for row, image in zip(got, images, strict=True):
        expected = _direct(layers, image * 255)
        np.testing.assert_allclose(row, expected, atol=2e-5)
    assert not np.allclose(got[0], got[1])


def test_converter_refuses_a_file_of_another_shape(released, tmp_path):
    path, _ = released
    with pytest.raises(InputError, match="VLAD assignment") as error:
        convert_matconvnet_struct(NetVLADMethod, path, NetVLADConfig(**{**CONFIG, "num_clusters": 8}))
    assert error.value.path == str(path)
    with pytest.raises(InputError, match="10 layers with weights; the vgg13 trunk, VLAD and whitening need 12"):
        convert_matconvnet_struct(NetVLADMethod, path, NetVLADConfig(**{**CONFIG, "backbone": "vgg13"}))
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"something": np.zeros(3)})
    with pytest.raises(InputError, match="net.layers"):
        convert_matconvnet_struct(NetVLADMethod, other, NetVLADConfig(**CONFIG))


def test_published_weights_are_fetched_locked_converted_once(released, tmp_path, monkeypatch):
    path, _ = released
    with LoopbackServer() as server:
        server.files["/models/Test_struct.mat"] = path.read_bytes()
        spec = WeightsSpec(url=server.url + "/models/Test_struct.mat", sha256=None, licence="test",
                           source="written by the test", conversion="matconvnet_struct", config=CONFIG)
        monkeypatch.setattr(NetVLADMethod, "weights", {"vgg11.test": spec})
        first = resolve_weights(NetVLADMethod, "vgg11.test", tmp_path)
        converted = tmp_path / "weights" / "netvlad" / "vgg11.test.pt"
        stamp = converted.stat().st_mtime_ns
        again = resolve_weights(NetVLADMethod, "vgg11.test", tmp_path)
        assert server.sent["/models/Test_struct.mat"] == path.stat().st_size  # bytes served: one download
    assert converted.stat().st_mtime_ns == stamp  # not converted twice
    lock = (tmp_path / "weights" / "netvlad" / "checksums.lock.json").read_text()
    assert first.sha256 in lock and again.sha256 == first.sha256
    assert first.name == "vgg11.test" and first.model.config.backbone == "vgg11"
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(first.model(x), again.model(x))


def test_checkpoint_round_trip_and_strict_loading(tmp_path):
    config = NetVLADConfig(backbone="resnet18", feature_index=3, drop_final_relu=False, num_clusters=4, whiten_dim=8)
    model = NetVLADMethod(config).eval()
    model.protocol = dataclasses.replace(model.protocol, mean=(0.5, 0.5, 0.5))
    path = tmp_path / "w.pt"
    digest = save_checkpoint(path, model, "resnet18.test", {"note": "test"})
    loaded = load_checkpoint(NetVLADMethod, path)
    assert loaded.sha256 == digest and loaded.name == "resnet18.test"
    assert loaded.model.protocol.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["vlad.centroids"]
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    payload["state_dict"]["whitening.linear.bias"] = torch.zeros(3)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(InputError) as error:
        load_checkpoint(NetVLADMethod, tmp_path / "bad.pt")
    message = str(error.value)
    assert "missing: vlad.centroids" in message and "unexpected: extra.weight" in message
    assert "whitening.linear.bias: file (3,) vs model (8,)" in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable weights file"):
        load_checkpoint(NetVLADMethod, tmp_path / "junk.pt")
