"""The NetVLAD weights released with Patch-NetVLAD (Hausler et al., CVPR 2021, arXiv 2103.01486), read into our
NetVLAD plugin.

Files (Hugging Face hub ``TobiasRobotics/Patch-NetVLAD``, commit fe70214, MIT): ``{pitts,mapillary}_WPCA{128,512,4096}
.pth.tar``, each a ``torch.save`` of ``{"num_pcs": P, "state_dict": ...}`` holding

- ``encoder.<i>.weight`` / ``.bias``: torchvision's VGG-16 ``features`` up to conv5_3 (i = 0 ... 28), without its
  last ReLU and pooling (``features[:-2]``), the indices of our timm trunk's ``features_<i>``;
- ``pool.centroids`` (K, D) and ``pool.conv.weight`` (K, D, 1, 1): the assignment, no bias (``vladv2`` off); the
  input is L2-normalised per column first (``normalize_input``), as our local descriptors are;
- ``WPCA.0.weight`` (P, K * D, 1, 1) and ``WPCA.0.bias`` (P,), float64 in the Pittsburgh files (the Mapillary file
  sizes fit float16): a 1 x 1 convolution over the NetVLAD vector, then L2.

Their NetVLAD vector is flattened cluster-major (index k * D + d), ours dimension-major (d * K + k), the order of
the authors' MatConvNet layer that our released-weights converter follows: the whitening's columns are permuted
accordingly (without that the descriptors come out nearly orthogonal to theirs). Inputs are RGB in 0..1 normalised
with torchvision's ImageNet mean and std. Their feature extraction resizes every image to 640 x 480 (aspect not kept);
NetVLAD's protocol here downscales the long side to 640, the same size for Pittsburgh's and Tokyo's 4:3 images.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from benchmarks.core.errors import InputError
from methods.base import IMAGENET_MEAN, IMAGENET_STD, ExtractionProtocol, WeightsSpec
from methods.layers.netvlad import NetVLAD
from methods.layers.whitening import PCAWhitening

HUB = "https://huggingface.co/TobiasRobotics/Patch-NetVLAD/resolve/main"
# (training set, num_pcs) -> sha256 of the hub file, from the Git LFS pointers of commit fe70214
# ("Upload Patch-NetVLAD public models"; huggingface.co/TobiasRobotics/Patch-NetVLAD/commit/fe70214...).
SHA256 = {
    ("pitts", 128): "74bb0e0113c074ed9b07651a5f01bd424171d8e3b91d7024d2ccb0b0392164f3",
    ("pitts", 512): "309611d927c759e897e1eb27977994236b5618d9d3cd7202035cea1b56c08c1c",
    ("pitts", 4096): "2c3cf17de91974156cb6aee40a6f7a229825095273d7de87c0792084ae1bf4aa",
    ("mapillary", 128): "5b6de8a5537061bbe7a477b62bb687b042d92d472e5231e2072026ecc59ec4b1",
    ("mapillary", 512): "acbe2597c1c23c95482883c05969006a74bf7e68c4151dbb4ab5d67b69e8e346",
    ("mapillary", 4096): "4b22ad1619bb7f085a5229d35f0f865740f2cdad2bced2ddbc7b28791c5b1542",
}
_TRAINED_ON = {"pitts": "Pitts30k-train", "mapillary": "Mapillary Street-Level Sequences"}
_ENCODER_KEY = re.compile(r"^encoder\.(\d+)\.(weight|bias)$")


def patchnetvlad_weights() -> dict[str, WeightsSpec]:
    """The six released models as named weights ``vgg16.patchnetvlad_<set>_<P>``."""
    return {f"vgg16.patchnetvlad_{trained}_{pcs}": WeightsSpec(
        url=f"{HUB}/{trained}_WPCA{pcs}.pth.tar", sha256=sha256, licence="MIT (Patch-NetVLAD code and models)",
        source=f"Patch-NetVLAD's NetVLAD (VGG-16, K = 64) trained on {_TRAINED_ON[trained]}, whitened to {pcs}-D; "
               "Hugging Face hub TobiasRobotics/Patch-NetVLAD commit fe70214",
        conversion="patchnetvlad_pth", config={"whiten_dim": pcs})
        for (trained, pcs), sha256 in SHA256.items()}


@dataclass(frozen=True)
class Release:
    """A released file's tensors (float32): trunk convolutions in order, centroids (K, D), assignment (K, D) and
    its bias (K,) or None, whitening (P, K * D) in THEIR cluster-major column order and its bias (P,), or None."""

    convolutions: list[tuple[torch.Tensor, torch.Tensor]]
    centroids: torch.Tensor
    assignment: torch.Tensor
    assignment_bias: torch.Tensor | None
    whitening: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def num_pcs(self) -> int | None:
        return None if self.whitening is None else int(self.whitening[0].shape[0])


def read_release(path: Path) -> Release:
    """Read and check a ``.pth.tar`` of the released layout (no code is unpickled: ``weights_only``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign or corrupt file
        raise InputError(f"not a readable Patch-NetVLAD .pth.tar ({type(error).__name__})", path) from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, Mapping):
        raise InputError("not a Patch-NetVLAD checkpoint: no 'state_dict' mapping", path)
    tensors = {key: value.float() for key, value in state.items() if isinstance(value, torch.Tensor)}
    for key in ("pool.centroids", "pool.conv.weight"):
        if key not in tensors:
            raise InputError(f"not a Patch-NetVLAD NetVLAD checkpoint: no {key}", path)
    centroids, assignment = tensors.pop("pool.centroids"), tensors.pop("pool.conv.weight")
    k, d = centroids.shape
    if tuple(assignment.shape) != (k, d, 1, 1):
        raise InputError(f"pool.conv.weight has shape {tuple(assignment.shape)}, not {(k, d, 1, 1)}", path)
    whitening = None
    if "WPCA.0.weight" in tensors:
        weight, bias = tensors.pop("WPCA.0.weight"), tensors.pop("WPCA.0.bias", None)
        if weight.dim() != 4 or tuple(weight.shape[1:]) != (k * d, 1, 1) or bias is None \
                or tuple(bias.shape) != (weight.shape[0],):
            raise InputError(f"WPCA.0.weight {tuple(weight.shape)} / bias do not fit a {k} x {d} NetVLAD", path)
        if "num_pcs" in payload and payload["num_pcs"] != weight.shape[0]:
            raise InputError(f"num_pcs {payload['num_pcs']} differs from WPCA.0.weight's {weight.shape[0]}", path)
        whitening = (weight.flatten(1), bias)
    assignment_bias = tensors.pop("pool.conv.bias", None)
    encoder = sorted((int(m[1]), m[2], key) for key in tensors if (m := _ENCODER_KEY.match(key)))
    unexpected = sorted(set(tensors) - {key for *_, key in encoder})
    if unexpected:
        raise InputError(f"unexpected tensors {unexpected} in a Patch-NetVLAD NetVLAD checkpoint", path)
    layers = sorted({index for index, *_ in encoder})
    try:
        convolutions = [(tensors[f"encoder.{i}.weight"], tensors[f"encoder.{i}.bias"]) for i in layers]
    except KeyError as missing:
        raise InputError(f"encoder layer without weight or bias: {missing.args[0]}", path) from None
    return Release(convolutions, centroids, assignment.flatten(1), assignment_bias, whitening)


class VLADModel(Protocol):
    """What :func:`fill_from_release` writes: our VLAD plugins' trunk, NetVLAD layer and whitening."""

    backbone: nn.Module
    vlad: NetVLAD
    whitening: PCAWhitening | None
    protocol: ExtractionProtocol


def cluster_major_to_dimension_major(weight: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """(P, K * D) columns indexed k * D + d -> (P, D * K) columns indexed d * K + k."""
    out = weight.shape[0]
    return weight.reshape(out, num_clusters, -1).transpose(1, 2).reshape(out, -1)


@torch.no_grad()
def fill_from_release(model: VLADModel, release: Release, path: Path) -> None:
    """Copy ``release`` into ``model`` (built with its K, whitening size and assignment bias) and set the
    ImageNet input normalisation the released weights expect."""
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(release.convolutions):
        raise InputError(f"the file has {len(release.convolutions)} encoder convolutions, the trunk "
                         f"{len(convs)} (the release is VGG-16 up to conv5_3)", path)
    targets = [(conv.weight, kernel, f"encoder convolution {i + 1}") for i, (conv, (kernel, _)) in
               enumerate(zip(convs, release.convolutions, strict=True))]
    targets += [(conv.bias, bias, f"encoder convolution {i + 1} bias") for i, (conv, (_, bias)) in
                enumerate(zip(convs, release.convolutions, strict=True))]
    targets += [(model.vlad.centroids, release.centroids, "pool.centroids"),
                (model.vlad.assignment.weight, release.assignment, "pool.conv.weight")]
    if release.assignment_bias is not None:
        targets.append((model.vlad.assignment.bias, release.assignment_bias, "pool.conv.bias"))
    if release.whitening is not None:
        if model.whitening is None:
            raise InputError("the file has a WPCA layer, the model no whitening", path)
        weight, bias = release.whitening
        targets += [(model.whitening.linear.weight, cluster_major_to_dimension_major(weight, release.num_clusters),
                     "WPCA.0.weight"), (model.whitening.linear.bias, bias, "WPCA.0.bias")]
    for target, value, what in targets:
        if target is None or tuple(target.shape) != tuple(value.shape):
            raise InputError(f"{what}: the file has shape {tuple(value.shape)}, the model needs "
                             f"{None if target is None else tuple(target.shape)}", path)
        target.copy_(value)
    model.protocol = dataclasses.replace(model.protocol, mean=IMAGENET_MEAN, std=IMAGENET_STD)
