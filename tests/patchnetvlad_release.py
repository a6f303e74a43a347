"""Seeded random weights in the layout of Patch-NetVLAD's released NetVLAD files (``{pitts,mapillary}_WPCA<P>.pth.tar``):
``{"num_pcs": P, "state_dict": {...}}`` with torchvision VGG-16 ``encoder.<i>.*`` up to conv5_3, ``pool.centroids``
(K, D), ``pool.conv.weight`` (K, D, 1, 1), ``WPCA.0.weight`` (P, K * D, 1, 1) and ``WPCA.0.bias`` (P,) in float64.
Used by the tests and by the probe that made ``tests/data/patchnetvlad_reference.json``."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

# torchvision's vgg16().features[:-2]: (index, in, out) of each 3 x 3 convolution, conv5_3 at index 28
VGG16_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
               (28, 512, 512))
ALPHA = 20.0  # assignment sharpness: w_k = alpha * c_k / |c_k|, as a vladv1 layer is initialised


def released_state(seed: int = 0, num_clusters: int = 64, num_pcs: int = 128,
                   wpca_dtype: torch.dtype = torch.float64) -> OrderedDict[str, torch.Tensor]:
    """The state dict of a release (numpy's PCG64 from ``seed``, so the same on every machine)."""
    rng = np.random.default_rng(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for index, cin, cout in VGG16_CONVS:
        state[f"encoder.{index}.weight"] = torch.from_numpy(
            rng.normal(0, np.sqrt(2 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32))
        state[f"encoder.{index}.bias"] = torch.from_numpy(rng.normal(0, 0.01, cout).astype(np.float32))
    dim = VGG16_CONVS[-1][2]
    centroids = rng.normal(0, 1 / np.sqrt(dim), (num_clusters, dim)).astype(np.float32)
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    state["pool.centroids"] = torch.from_numpy(centroids)
    state["pool.conv.weight"] = torch.from_numpy((ALPHA * unit)[:, :, None, None].astype(np.float32))
    state["WPCA.0.weight"] = torch.from_numpy(
        rng.normal(0, 1 / np.sqrt(num_clusters * dim), (num_pcs, num_clusters * dim, 1, 1))).to(wpca_dtype)
    state["WPCA.0.bias"] = torch.from_numpy(rng.normal(0, 0.01, num_pcs)).to(wpca_dtype)
    return state


def write_release(path: Path, seed: int = 0, num_pcs: int = 128, wpca_dtype: torch.dtype = torch.float64) -> Path:
    """``torch.save`` of ``{"num_pcs", "state_dict"}`` at ``path``, as Patch-NetVLAD's add_pca.py saves them."""
    torch.save({"num_pcs": num_pcs, "state_dict": released_state(seed, num_pcs=num_pcs, wpca_dtype=wpca_dtype)}, path)
    return path
