"""timm imports next to PyPI's CUDA-only torchvision, and only benchmarks/core/timm_import.py imports it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from methods.layers.backbone import create_backbone

ROOT = Path(__file__).resolve().parent.parent


def test_backbone_features_in_a_fresh_interpreter():
    code = ("from methods.layers.backbone import create_backbone; import torch;"
            "m = create_backbone('resnet18', (3, 4)).eval();"
            "print([tuple(t.shape) for t in m(torch.zeros(1, 3, 64, 64))])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[(1, 256, 4, 4), (1, 512, 2, 2)]"


def test_backbone_in_process():
    model = create_backbone("resnet18", (4,)).eval()
    assert tuple(model(torch.zeros(2, 3, 32, 32))[0].shape) == (2, 512, 1, 1)


def test_timm_and_torchvision_are_imported_in_one_place():
    pattern = re.compile(r"^\s*(import|from)\s+(timm|torchvision)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for folder in ("benchmarks", "methods", "datasets")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == ["benchmarks/core/timm_import.py"]
