"""Losses shared by the method plugins."""
from __future__ import annotations

import torch


def squared_distances(anchor: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(D,) and (M, D) -> (M,) squared Euclidean distances."""
    return (others - anchor[None]).pow(2).sum(dim=1)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                 margin: float = 0.1) -> torch.Tensor:
    """sum_j max(0, d^2(a, p) + margin - d^2(a, n_j)) for one anchor (D,), positive (D,), negatives (M, D).

    NetVLAD's weakly supervised ranking loss (eq. 7, with its best potential positive) and, with M = 1,
    MSCFP's triplet loss; both on squared Euclidean distances with margin 0.1.
    """
    positive_distance = squared_distances(anchor, positive[None])
    return torch.relu(positive_distance + margin - squared_distances(anchor, negatives)).sum()
