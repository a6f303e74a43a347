"""Generalized-mean (GeM) pooling with a trainable exponent (Radenović et al., TPAMI 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """(B, C, H, W) -> (B, C): ``mean(clamp(x, eps) ** p) ** (1 / p)`` over each map; p = 1 is average pooling,
    p -> infinity max pooling. ``p`` is one trainable scalar shared by all channels, as in DOLG."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, trainable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)), requires_grad=trainable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4g}, eps={self.eps}"
