"""Learned PCA-whitening: a linear layer fitted by PCA on training descriptors (then trainable)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

EIGENVALUE_EPSILON = 1e-9  # added to each eigenvalue before the square root, as NetVLAD's whitening does


class PCAWhitening(nn.Module):
    """(B, D_in) -> (B, D_out): x -> diag(1 / sqrt(lambda + eps)) U^T (x - mean), the top D_out components."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim > in_dim:
            raise ValueError(f"whitening to {out_dim} dimensions needs at least that many inputs, got {in_dim}")
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    @torch.no_grad()
    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """Fit on (N, D_in) descriptors, N > D_out; returns the kept eigenvalues (D_out,), largest first.

        Uses the SVD of the centred data, so N may be far smaller than D_in (32768-D VLAD vectors)."""
        out_dim = self.linear.out_features
        data = descriptors.astype(np.float64)
        if data.shape[0] <= out_dim:
            raise ValueError(f"PCA-whitening to {out_dim} dimensions needs more than {out_dim} training "
                             f"descriptors, got {data.shape[0]}")
        mean = data.mean(axis=0)
        _, singular, components = np.linalg.svd(data - mean, full_matrices=False)
        # An eigenvector's sign is arbitrary: fix it (largest entry positive) so fits agree across LAPACKs.
        components *= np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])[:, None]
        eigenvalues = singular[:out_dim] ** 2 / (data.shape[0] - 1)
        projection = components[:out_dim] / np.sqrt(eigenvalues + EIGENVALUE_EPSILON)[:, None]
        self.linear.weight.copy_(torch.from_numpy(projection))
        self.linear.bias.copy_(torch.from_numpy(-projection @ mean))
        return eigenvalues
