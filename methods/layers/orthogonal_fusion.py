"""DOLG's local branch and orthogonal fusion (Yang et al., ICCV 2021, Sec. 3.2-3.3).

The local branch turns a res4 map into attention-weighted, L2-normalised local features: an optional
multi-atrous block (a 1 x 1 convolution and three dilated 3 x 3 convolutions plus an image-level pooling
branch, concatenated, 1 x 1 convolution, ReLU), then self-attention (1 x 1 convolution, BN; the features
L2-normalised along channels; ReLU, 1 x 1 convolution to one channel, Softplus as attention). The fusion
removes from each local feature its projection on the global feature and average-pools what is left.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MultiAtrous(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W): image pooling, 1 x 1 and dilated 3 x 3 branches of ``branch``
    channels each, concatenated in that order, then a 1 x 1 convolution and ReLU."""

    def __init__(self, in_channels: int, branch: int, out_channels: int,
                 dilations: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, branch, 1), nn.ReLU())
        self.branches = nn.ModuleList(
            [nn.Conv2d(in_channels, branch, 1)]
            + [nn.Conv2d(in_channels, branch, 3, padding=d, dilation=d) for d in dilations])
        self.project = nn.Sequential(nn.Conv2d(branch * (len(dilations) + 2), out_channels, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[2:])  # the 1 x 1 map, the same at every position
        return self.project(torch.cat([pooled, *(branch(x) for branch in self.branches)], dim=1))


class LocalBranch(nn.Module):
    """(B, C_in, H, W) -> (B, C, H, W) local features: softplus attention (B, 1, H, W) times the channel-wise
    L2-normalised output of 1 x 1 convolution + BN; ``multi_atrous`` (or None) runs first."""

    def __init__(self, in_channels: int, channels: int, multi_atrous: MultiAtrous | None = None) -> None:
        super().__init__()
        self.multi_atrous = multi_atrous
        self.conv = nn.Conv2d(in_channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.score = nn.Conv2d(channels, 1, 1)

    def attention_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) attention (positive) and (B, C, H, W) unit-norm features."""
        if self.multi_atrous is not None:
            x = self.multi_atrous(x)
        x = self.bn(self.conv(x))
        return F.softplus(self.score(F.relu(x))), F.normalize(x, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention, features = self.attention_and_features(x)
        return attention * features


def orthogonal_component(local: torch.Tensor, global_: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, C, H, W) local features minus their projection ``(f_l . f_g / |f_g|^2) f_g`` on the (B, C) global
    feature: every position's result is orthogonal to ``global_``."""
    g = global_[:, :, None, None]
    dots = (local * g).sum(dim=1, keepdim=True)
    return local - dots / global_.pow(2).sum(dim=1).clamp(min=eps)[:, None, None, None] * g
