"""Every registered method at work on a small configuration (a ResNet-18 trunk, few clusters, short whitening):
forward gives (B, D) finite L2-normalised descriptors, the protocol is declared, the config survives its dict,
and an untrained checkpoint (what ``train --steps 0`` writes) loads back to the same module and descriptors."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from methods import load_plugins
from methods.base import ExtractionProtocol
from methods.weights import load_checkpoint, save_checkpoint

METHODS = load_plugins()
SMALL = {"num_clusters": 4, "whiten_dim": 16}  # fields that size a descriptor, where a method has them


def small_config(cls):
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    return cls.config_class(**{**cls.config_for_trunk("resnet18"), **{k: v for k, v in SMALL.items() if k in fields}})


@pytest.mark.parametrize("name", METHODS.names())
def test_a_registered_method_extracts_declares_and_round_trips(name, tmp_path):
    cls = METHODS.get(name)
    config = small_config(cls)
    assert config.backbone == "resnet18" and cls.config_class(**config.to_dict()) == config
    assert isinstance(cls.protocol, ExtractionProtocol) and cls.protocol.scales
    torch.manual_seed(0)
    model = cls(config).eval()
    images = torch.rand(3, 3, 72, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images)
    assert out.shape == (3, model.descriptor_dim) and torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)

    path = tmp_path / "untrained.pt"
    digest = save_checkpoint(path, model, "resnet18.untrained", {"trained_on": None})
    loaded = load_checkpoint(cls, path)
    assert (loaded.name, loaded.sha256) == ("resnet18.untrained", digest)
    assert json.loads((tmp_path / "untrained.pt.json").read_text())["sha256"] == digest
    assert loaded.model.config == config and loaded.model.protocol == model.protocol
    with torch.no_grad():
        assert torch.equal(loaded.model(images), out)
