"""timm backbones as feature extractors: the one way methods build their convolutional trunk."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from benchmarks.core.timm_import import import_timm


def create_backbone(name: str, out_indices: Sequence[int], pretrained: bool = False,
                    drop_final_relu: bool = False) -> nn.Module:
    """``timm.create_model(name, features_only=True, out_indices=...)``: forward returns a list of
    (B, C_i, H_i, W_i) maps, one per index. Pretrained timm weights come from the Hugging Face hub
    (``HF_HUB_OFFLINE=1`` makes a missing one fail at once); methods load their papers' weights instead.

    ``drop_final_relu``: the last feature map is taken before its ReLU (NetVLAD crops VGG-16 at conv5_3
    so that local descriptors keep their negative responses); only for trunks whose last module is a ReLU.
    """
    timm = import_timm()
    model = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices))
    if drop_final_relu:
        last_name, last = list(model.named_children())[-1]
        if not isinstance(last, nn.ReLU):
            raise ValueError(f"{name}: the last module of the trunk is {type(last).__name__}, not a ReLU to drop")
        setattr(model, last_name, nn.Identity())
    return model


def feature_channels(backbone: nn.Module) -> list[int]:
    """Channels of each map the backbone returns."""
    return list(backbone.feature_info.channels())  # type: ignore[union-attr, operator]
