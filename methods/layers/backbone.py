"""timm backbones as feature extractors: the one way methods build their convolutional trunk."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from benchmarks.timm_import import import_timm


def create_backbone(name: str, out_indices: Sequence[int], pretrained: bool = False) -> nn.Module:
    """``timm.create_model(name, features_only=True, out_indices=...)``: forward returns a list of
    (B, C_i, H_i, W_i) maps, one per index. Pretrained timm weights come from the Hugging Face hub
    (``HF_HUB_OFFLINE=1`` makes a missing one fail at once); methods load their papers' weights instead.
    """
    timm = import_timm()
    return timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices))
