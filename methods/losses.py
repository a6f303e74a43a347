"""Losses shared by the method plugins."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


class ArcFace(torch.nn.Module):
    """ArcFace (Deng et al., CVPR 2019): cross-entropy over ``scale * cos`` between L2-normalised embeddings and
    class weights, the true class's angle enlarged by ``margin``: cos(theta + m).

    Where theta + m would pass pi (cos(theta) <= cos(pi - m)) the target logit is cos(theta) - m sin(m)
    instead, the usual continuation that keeps it decreasing in theta.
    """

    def __init__(self, dim: int, n_classes: int, margin: float = 0.15, scale: float = 30.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(n_classes, dim))
        torch.nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings and (B,) class indices -> (B, K) scaled logits with the margin on the true class."""
        cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)).clamp(-1, 1)
        target = cos.gather(1, labels[:, None])
        sin = (1 - target.pow(2)).clamp(min=0).sqrt()
        with_margin = target * math.cos(self.margin) - sin * math.sin(self.margin)
        beyond = target <= math.cos(math.pi - self.margin)
        with_margin = torch.where(beyond, target - math.sin(math.pi - self.margin) * self.margin, with_margin)
        return self.scale * cos.scatter(1, labels[:, None], with_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the batch."""
        return F.cross_entropy(self.logits(embeddings, labels), labels)


def contrastive_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                     margin: float = 0.7, eps: float = 1e-6) -> torch.Tensor:
    """0.5 d(a, p)^2 + sum_j 0.5 max(0, margin - d(a, n_j))^2 for one tuple: anchor (D,), positive (D,), negatives
    (M, D); d the Euclidean distance (Radenovic et al., TPAMI 2018, eq. 4). As in the authors' code, ``eps`` is
    added to each difference before the norm, which keeps the gradient finite when two descriptors coincide."""
    positive_distance = (anchor - positive + eps).pow(2).sum().sqrt()
    negative_distances = (anchor[None] - negatives + eps).pow(2).sum(dim=1).sqrt()
    return 0.5 * positive_distance.pow(2) + 0.5 * torch.relu(margin - negative_distances).pow(2).sum()
