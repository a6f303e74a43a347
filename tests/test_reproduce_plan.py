"""``reproduce METHOD --plan`` (issue 18): what would be downloaded, trained and evaluated, with a time estimate on a
named GPU; offline, exit 0, nothing written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.evaluation.reproduce_plan import forward_flops
from methods.base import ExtractionProtocol
from methods.netvlad import NetVLADConfig, NetVLADMethod


@pytest.mark.parametrize(("method", "expected"), [
    ("netvlad", ["pitts30k:", "tokyo247:", "oxford5k:", "holidays:", "weights vgg16.pitts30k: Pitts30K_struct.mat",
                 "with weights: vgg16.pitts30k, vgg16.tokyotm"]),
    ("mscfp", ["initialisation resnet101.in1k_caffe", "mscfp on gldv2 train, 160000 steps of 18 images",
               "with weights: resnet101.gldv2 (the trained checkpoint)"]),
    ("remap", ["initialisation resnext101_32x8d.in1k_torchvision", "remap on gldv2 train, 20000 steps of 96 images",
               "not in the paper: the suite's guess"]),
    ("dolg", ["roxford5k: 4,993 database images + 70 queries", "weights resnet50.gldv2: r50_dolg_512.pt"]),
    ("gem", ["rparis6k: 6,322 database images + 70 queries", "retrievalSfM120k-resnet101-gem-b80fb85.pth"]),
])
def test_the_plan_lists_downloads_training_and_evaluation_and_writes_nothing(tmp_path: Path, method: str,
                                                                             expected: list[str]) -> None:
    root = tmp_path / "root"
    out = CliRunner().invoke(cli, ["reproduce", method, "--plan", "--root", str(root)])
    assert out.exit_code == 0, out.output
    assert "time on NVIDIA H100 SXM at 30% of 989 TFLOPS" in out.output
    assert ("  train:" in out.output) == (method in ("mscfp", "remap"))
    for line in expected:
        assert line in out.output
    assert re.search(r"GFLOP each, about [0-9.]+ (s|min|h) per weights", out.output)
    assert not root.exists() and list(tmp_path.iterdir()) == []


def test_forward_flops_counts_every_scale_at_the_protocol_sizes() -> None:
    """conv5 of a small VGG-like count: two scales cost the sum of the two sizes' single-scale counts."""
    with torch.device("meta"):
        model = NetVLADMethod(NetVLADConfig(backbone="vgg11", num_clusters=4, whiten_dim=None)).eval()
    single = forward_flops(model, (64, 48))
    model.protocol = ExtractionProtocol(max_size=None, scales=(1.0, 0.5))
    with_half = forward_flops(model, (64, 48))
    model.protocol = ExtractionProtocol(max_size=None, scales=(0.5,))
    assert with_half == pytest.approx(single + forward_flops(model, (64, 48)))
    model.protocol = ExtractionProtocol(max_size=32)  # downscaled to 32 x 24 first
    assert forward_flops(model, (64, 48)) == pytest.approx(forward_flops(model, (32, 24)))
    assert single > 1e8


def test_reproducing_a_method_without_published_weights_says_how_to_train_them(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["reproduce", "mscfp", "--allow-dirty", "--root", str(tmp_path / "root")])
    assert out.exit_code != 0
    assert "mscfp has no published weights: train them as `reproduce mscfp --plan` lists" in out.output
    assert not (tmp_path / "root").exists()
