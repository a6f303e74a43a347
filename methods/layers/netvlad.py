"""NetVLAD pooling (Arandjelovic et al., CVPR 2016): soft-assignment VLAD with decoupled {w_k, b_k} and c_k.

Each local descriptor x_i is softly assigned to cluster k with a_k(x_i) = softmax_k(w_k . x_i + b_k); the
VLAD matrix V(k, d) = sum_i a_k(x_i) (x_i(d) - c_k(d)) is intra-normalised (``per_cluster``: each cluster's
residual sum to unit L2 norm; ``over_clusters``: each dimension d's K values to unit norm, as MSCFP's authors'
code does), flattened and L2-normalised. The flattened vector is d-major (index d * K + k), the
layout of the authors' MatConvNet layer, so a released whitening applies to it unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The paper's alpha: on average the second-closest centroid gets 1/100 of the closest one's assignment.
SECOND_CENTROID_RATIO = 0.01
# Intra-normalisation: V(k, .) to unit norm for each cluster k (the paper), or V(., d) for each dimension d.
NORMALISATIONS = ("per_cluster", "over_clusters")


class NetVLAD(nn.Module):
    """(B, D, N) L2-normalised local descriptors -> (B, K * D) NetVLAD vectors of unit norm.

    ``assignment_bias`` False is the variant of the released models (``vlad``: w_k proportional to the
    unit centroid, no bias); True is the paper's general form (``vladv2``: w_k = 2 alpha c_k,
    b_k = -alpha |c_k|^2). ``normalisation``: one of ``NORMALISATIONS`` (the intra-normalisation's axis).
    """

    def __init__(self, dim: int, num_clusters: int = 64, assignment_bias: bool = False,
                 normalisation: str = "per_cluster") -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation {normalisation!r} is not one of {NORMALISATIONS}")
        self.dim, self.num_clusters, self.normalisation = dim, num_clusters, normalisation
        self.assignment = nn.Linear(dim, num_clusters, bias=assignment_bias)
        self.centroids = nn.Parameter(torch.randn(num_clusters, dim) / math.sqrt(dim))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    def forward(self, local: torch.Tensor) -> torch.Tensor:
        soft = torch.softmax(torch.einsum("kd,bdn->bkn", self.assignment.weight, local)
                             + self._bias()[None, :, None], dim=1)                          # (B, K, N)
        residual_sums = torch.bmm(soft, local.transpose(1, 2)) \
            - soft.sum(dim=2, keepdim=True) * self.centroids[None]                          # (B, K, D)
        vlad = F.normalize(residual_sums, dim=2 if self.normalisation == "per_cluster" else 1)  # intra-norm.
        return F.normalize(vlad.transpose(1, 2).flatten(1), dim=1)

    def _bias(self) -> torch.Tensor:
        bias = self.assignment.bias
        return bias if bias is not None else self.assignment.weight.new_zeros(self.num_clusters)

    @torch.no_grad()
    def initialise(self, centroids: np.ndarray, descriptors: np.ndarray) -> float:
        """Set c_k to k-means ``centroids`` (K, D) and {w_k, b_k} with the paper's alpha, measured on a sample
        of L2-normalised local ``descriptors`` (M, D); returns alpha."""
        centroids = centroids.astype(np.float64)
        sample = descriptors.astype(np.float64)
        if self.assignment.bias is None:
            unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
            top2 = np.sort(sample @ unit.T, axis=1)[:, -2:]
            alpha = -math.log(SECOND_CENTROID_RATIO) / float(np.mean(top2[:, 1] - top2[:, 0]))
            self.assignment.weight.copy_(torch.from_numpy(alpha * unit))
        else:
            squared = (sample ** 2).sum(1)[:, None] - 2 * sample @ centroids.T + (centroids ** 2).sum(1)[None]
            nearest2 = np.sort(squared, axis=1)[:, :2]
            alpha = -math.log(SECOND_CENTROID_RATIO) / float(np.mean(nearest2[:, 1] - nearest2[:, 0]))
            self.assignment.weight.copy_(torch.from_numpy(2 * alpha * centroids))
            self.assignment.bias.copy_(torch.from_numpy(-alpha * (centroids ** 2).sum(1)))
        self.centroids.copy_(torch.from_numpy(centroids))
        return alpha

    @torch.no_grad()
    def initialise_fixed_alpha(self, centroids: np.ndarray, alpha: float) -> None:
        """Set c_k to ``centroids`` (K, D), w_k = 2 alpha c_k and b_k = -alpha |c_k| (the norm, not its square):
        NetVLAD-pytorch's initialisation with a fixed alpha, as MSCFP's authors' ``NetVLAD.init_params``."""
        if self.assignment.bias is None:
            raise ValueError("a fixed-alpha initialisation sets the assignment bias: assignment_bias must be True")
        tensor = torch.from_numpy(np.asarray(centroids, dtype=np.float32))
        self.centroids.copy_(tensor)
        self.assignment.weight.copy_(2.0 * alpha * tensor)
        self.assignment.bias.copy_(-alpha * tensor.norm(dim=1))


def kmeans(descriptors: np.ndarray, k: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """k-means (faiss, Lloyd iterations from a seeded random start) of (M, D) descriptors -> (k, D) float32."""
    import faiss

    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if data.shape[0] < k:
        raise ValueError(f"k-means needs at least {k} descriptors, got {data.shape[0]}")
    clustering = faiss.Kmeans(data.shape[1], k, niter=iterations, seed=seed, verbose=False,
                              max_points_per_centroid=data.shape[0])
    clustering.train(data)
    return np.asarray(clustering.centroids, dtype=np.float32)
