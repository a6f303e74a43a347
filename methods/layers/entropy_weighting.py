"""REMAP's relative-entropy weighting of region descriptors (Husain and Bober, IEEE TIP 2019, Sec. III).

A region's "region entropy" is the KL divergence between the distributions of Euclidean distances between
its descriptors in matching and in non-matching image pairs: the better a region separates the two, the more
it is worth. The divergences initialise non-negative per-region (and per-layer) weights that then train with
the rest of the network.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HISTOGRAM_PSEUDOCOUNT = 0.5   # added to every bin of both histograms (Jeffreys' prior): no empty bin, finite KL
SMALLEST_WEIGHT = 1e-3        # a weight initialised at zero would still train (softplus never reaches zero)


def histogram_kl_divergence(matching: np.ndarray, non_matching: np.ndarray, bins: int) -> np.ndarray:
    """KL(P(y | m) || P(y | n)) per column: (P_m, K) and (P_n, K) distances -> (K,) divergences in nats.

    Each column's two samples are binned on ``bins`` equal bins over their common range, each bin gets
    ``HISTOGRAM_PSEUDOCOUNT``, and the KL divergence of the normalised histograms is returned.
    """
    matching, non_matching = np.asarray(matching, np.float64), np.asarray(non_matching, np.float64)
    if matching.ndim != 2 or non_matching.ndim != 2 or matching.shape[1] != non_matching.shape[1]:
        raise ValueError(f"expected (P_m, K) and (P_n, K) distances, got {matching.shape} and {non_matching.shape}")
    if len(matching) == 0 or len(non_matching) == 0:
        raise ValueError("the KL divergence needs at least one matching and one non-matching pair")
    out = np.empty(matching.shape[1])
    for k in range(matching.shape[1]):
        low = min(matching[:, k].min(), non_matching[:, k].min())
        high = max(matching[:, k].max(), non_matching[:, k].max())
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        p = np.histogram(matching[:, k], edges)[0] + HISTOGRAM_PSEUDOCOUNT
        q = np.histogram(non_matching[:, k], edges)[0] + HISTOGRAM_PSEUDOCOUNT
        p, q = p / p.sum(), q / q.sum()
        out[k] = float(np.sum(p * np.log(p / q)))
    return out


class RegionWeights(nn.Module):
    """Non-negative weights alpha (S, R), one per region of each of S streams: alpha = softplus(theta).

    The parametrisation keeps every weight non-negative under any optimiser step; ``forward`` sums a stream's
    region descriptors with its weights. Before initialisation every weight is 1 (R-MAC's plain sum).
    """

    def __init__(self, streams: int, regions: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.full((streams, regions), _inverse_softplus(1.0)))

    @property
    def alpha(self) -> torch.Tensor:
        """(S, R) the weights, each >= 0."""
        return F.softplus(self.theta)

    def forward(self, regions: torch.Tensor, stream: int) -> torch.Tensor:
        """(B, R, C) region descriptors of stream ``stream`` -> (B, C) their weighted sum."""
        return torch.einsum("r,brc->bc", self.alpha[stream], regions)

    @torch.no_grad()
    def initialise(self, weights: np.ndarray) -> None:
        """Set alpha to (S, R) ``weights`` (KL divergences), raised to ``SMALLEST_WEIGHT`` where smaller."""
        if weights.shape != tuple(self.theta.shape):
            raise ValueError(f"expected {tuple(self.theta.shape)} weights, got {weights.shape}")
        floored = np.maximum(np.asarray(weights, np.float64), SMALLEST_WEIGHT)
        self.theta.copy_(torch.from_numpy(floored + np.log(-np.expm1(-floored))))  # softplus^-1


def _inverse_softplus(value: float) -> float:
    """theta with softplus(theta) = value > 0 (stable for large values)."""
    return value + math.log(-math.expm1(-value))
