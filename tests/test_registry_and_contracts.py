"""Registry behaviour, and the plugin contracts checked on every registered plugin and on toy plugins."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.core.acquire import FileSpec
from benchmarks.core.errors import InputError
from benchmarks.core.registry import Registry
from datasets import load_plugins as load_dataset_plugins
from datasets.base import DatasetSpec, LoadedDataset, Protocol, dataset_problems
from methods import load_plugins
from methods.base import Config, ExtractionProtocol, RetrievalMethod, WeightsSpec, method_problems

METHODS = load_plugins()
DATASETS = load_dataset_plugins()


def test_registry_register_get_and_suggest():
    reg: Registry[int] = Registry("method")
    reg.register("netvlad")(1)
    reg.register("mscfp")(2)
    assert reg.get("netvlad") == 1 and reg.names() == ["netvlad", "mscfp"] and "mscfp" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("netvlad")(3)
    with pytest.raises(ValueError, match="lowercase id"):
        reg.register("NetVLAD")
    with pytest.raises(InputError, match="unknown method 'netvald'; did you mean netvlad"):
        reg.get("netvald")


@pytest.mark.parametrize("name", METHODS.names())
def test_registered_method_satisfies_the_contract(name):
    assert method_problems(name, METHODS.get(name)) == []


@pytest.mark.parametrize("name", DATASETS.names())
def test_registered_dataset_satisfies_the_contract(name):
    assert dataset_problems(name, DATASETS.get(name)) == []
    assert all(required in DATASETS for required in DATASETS.get(name).requires)


@dataclass(frozen=True)
class ToyConfig(Config):
    dim: int = 8


class Toy(RetrievalMethod):
    """Global average pooling of a 1x1 convolution: the smallest method that meets the contract."""

    name = "toy"
    description = "a toy method for the contract tests"
    config_class = ToyConfig
    weights = {"conv1x1.untrained": WeightsSpec(url=None, sha256=None, licence="MIT", source="this test",
                                                config={"dim": 8})}
    protocol = ExtractionProtocol(max_size=None, scales=(1.0,))

    def __init__(self, config=None):
        super().__init__(config)
        self.conv = torch.nn.Conv2d(3, self.config.dim, 1)

    @property
    def descriptor_dim(self) -> int:
        return self.config.dim

    def forward(self, images):
        return F.normalize(self.conv(images).mean(dim=(2, 3)), dim=1)


def test_a_sound_toy_method_passes():
    assert method_problems("toy", Toy) == []


def test_contract_violations_are_reported():
    class Unnormalised(Toy):
        def forward(self, images):
            return self.conv(images).mean(dim=(2, 3)) * 3

    class BadWeights(Toy):
        weights = {"Untrained": WeightsSpec(url="ftp://x", sha256="abc", licence="", source="", config={"p": 3})}

    assert method_problems("toy", Unnormalised) == ["toy: descriptors are not finite and L2-normalised"]
    problems = " | ".join(method_problems("toy", BadWeights))
    for expected in ("not 'arch.tag'", "64 lowercase hex", "not http(s)", "licence and source",
                     "unknown field(s) ['p']"):
        assert expected in problems
    assert method_problems("other", Toy) == ["other: class name attribute 'toy' differs"]


class ToyDataset(DatasetSpec):
    name = "toyset"
    description = "a toy dataset"
    protocol = Protocol.REVISITED
    files = (FileSpec("gnd_toy.pkl", urls=("https://example.org/gnd_toy.pkl",), sha256="0" * 64),)

    def load(self, data_root: Path, split: str | None = None) -> LoadedDataset:
        raise NotImplementedError

    def check(self, data_root: Path) -> list[str]:
        return []


def test_dataset_contract():
    assert dataset_problems("toyset", ToyDataset) == []

    class Twice(ToyDataset):
        files = ToyDataset.files * 2
        protocol = "revisited"

    assert dataset_problems("toyset", Twice) == ["toyset: protocol must be a Protocol",
                                                 "toyset: two FileSpecs share a name"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "../escape.tar"}, "relative path inside"),
        ({"name": "a.tar", "urls": ("https://x",), "sha256": "ABC"}, "64 lowercase hex"),
        ({"name": "a.tar"}, "urls or manual"),
    ],
)
def test_filespec_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FileSpec(**kwargs)
