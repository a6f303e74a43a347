"""MSCFP's multi-scale pooling of a convolutional map into column features (Vaccaro et al., ICMR 2020)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def stride1_max_pool_columns(features: torch.Tensor, windows: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, N): each window's stride-1 max-pooled map, its columns concatenated.

    A w x w window gives (H - w + 1) x (W - w + 1) columns, so N = sum over windows. A map smaller than a
    window is pooled with the window clipped to the map (one column per clipped side), so small images
    still give descriptors.
    """
    height, width = features.shape[-2:]
    pooled = [F.max_pool2d(features, (min(w, height), min(w, width)), stride=1).flatten(2) for w in windows]
    return torch.cat(pooled, dim=2)


def split_columns(columns: torch.Tensor, part: int) -> torch.Tensor:
    """(B, C, N) -> (B, part, N * C / part): each C-dim column cut into C / part consecutive sub-vectors."""
    batch, channels, n = columns.shape
    if channels % part:
        raise ValueError(f"{channels} channels do not split into {part}-dim sub-vectors")
    return columns.reshape(batch, channels // part, part, n).permute(0, 2, 1, 3).reshape(batch, part, -1)
