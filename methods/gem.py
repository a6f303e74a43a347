"""GeM (Radenovic, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018,
arXiv 1711.02512).

A ResNet trunk (conv5, after its ReLU), GeM pooling with one trainable exponent p (initially 3), L2; then the
learned whitening "Lw" (a linear map with bias, fitted after training on matching pairs) and L2. Trained with the
contrastive loss (margin 0.85 for ResNet-101) on tuples of a query, a positive and 5 hard negatives.

Test protocol of the authors' code (cnnimageretrieval-pytorch ``cirtorch/examples/test.py``, ``extract_ms``,
``whitenapply``): images downscaled so that the longest side is at most 1024 (PIL ``thumbnail``: never enlarged),
queries cropped to their box first, ImageNet mean/std; scales 1, 1/sqrt(2), 1/2 (``F.interpolate``, bilinear,
``align_corners=False``, no antialiasing), each scale's L2-normalised descriptor raised to the power p of the
network's GeM, averaged, raised to 1/p and L2-normalised; then Lw and L2. Because the scales combine by this
power mean, not by the suite's sum, they are a Config field applied in :meth:`GeMMethod.forward` and the shared
protocol has the one scale 1. Difference kept on purpose because every method shares it: the suite downscales
with bilinear resampling, the authors' loader with PIL's antialiasing filter.

Released weights: the authors' ``retrievalSfM120k-resnet101-gem`` (trained in MatConvNet, converted by them to a
torchvision ResNet). Their checkpoint holds ``state_dict`` (``features.0`` conv1, ``features.1`` bn1,
``features.4``..``features.7`` layer1..layer4, ``pool.p``) and ``meta`` (mean, std, and ``Lw`` learned on
retrieval-SfM-120k, one for single scale ``ss`` and one for multi-scale ``ms``, each ``m`` (D, 1) and ``P``
(D, D): ``x -> P (x - m)``); mapped by :func:`convert_cirtorch_checkpoint`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.core.errors import InputError
from methods import METHODS
from methods.base import Config, ExtractionProtocol, Reproduction, RetrievalMethod, WeightsSpec
from methods.layers.backbone import create_backbone, feature_channels
from methods.layers.gem import GeM
from methods.recipes import TripletRecipe

WHITENING_SET = "retrieval-SfM-120k"  # the key of the released Lw in the checkpoint's meta


@dataclass(frozen=True)
class GeMConfig(Config):
    backbone: str = "resnet101"                               # a timm ResNet; conv5 is pooled
    gem_p: float = 3.0                                        # initial GeM exponent (trainable)
    whitening: bool = True                                    # the learned whitening Lw after pooling
    scales: tuple[float, ...] = (1.0, 1 / math.sqrt(2), 0.5)  # test.py --multiscale '[1, 1/2**(1/2), 1/2]'
    scale_power: bool = True                                  # combine scales by the power mean with GeM's p


@METHODS.register("gem")
class GeMMethod(RetrievalMethod):
    name = "gem"
    description = "GeM (TPAMI 2018): ResNet conv5, GeM pooling (trainable p), learned whitening Lw, multi-scale"
    config_class = GeMConfig
    config: GeMConfig
    protocol = ExtractionProtocol(max_size=1024, scales=(1.0,), crop_queries=True)  # scales: see the docstring
    # The README's command for the TPAMI network (cirtorch/examples/train.py): contrastive loss, margin 0.85, Adam
    # lr 5e-7 (the script's default is 1e-6; the README lowered it to match the MatConvNet training), weight decay
    # 1e-6, lr * exp(-0.01) per epoch, 5 tuples a batch of 1 query + 1 positive + 5 negatives, re-mined every
    # epoch for 2000 queries from a pool of 22000 images (the script's default 20000), 362-pixel training images.
    # Here tuples come from the suite's class mining (one hard negative per tuple), not SfM clusters with 5.
    recipe: ClassVar[TripletRecipe] = TripletRecipe(
        mining="classes", loss="contrastive", margin=0.85, optimizer="adam", lr=5e-7, weight_decay=1e-6,
        lr_decay=0.01, tuples_per_batch=5, n_negatives=5, cache_refresh=400, mining_batch=2000)
    # cirtorch's init_network starts ResNet-101 from its Caffe-converted ImageNet features (FEATURES['resnet101']).
    initialisations = {"resnet101": "resnet101.in1k_caffe"}
    weights = {"resnet101.sfm120k": WeightsSpec(
        url="http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/retrieval-SfM-120k/"
            "retrievalSfM120k-resnet101-gem-b80fb85.pth",
        sha256=None,  # none published (b80fb85 is a prefix of it by torch hub's convention): locked on first download
        licence="MIT (filipradenovic/cnnimageretrieval-pytorch)",
        source="the authors' retrievalSfM120k-resnet101-gem (cirtorch/examples/test.py PRETRAINED), with its "
               "precomputed multi-scale Lw learned on retrieval-SfM-120k",
        conversion="cirtorch_checkpoint", config={"backbone": "resnet101"})}
    reproduction = Reproduction(datasets=("roxford5k", "rparis6k"), weights=tuple(weights),
                                r1m_datasets=("roxford5k+1m", "rparis6k+1m"))
    finalise_with_labels = True  # the training loop passes the class labels to :meth:`finalise`

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.backbone = create_backbone(self.config.backbone, (4,))
        dim = feature_channels(self.backbone)[-1]
        self.gem = GeM(self.config.gem_p)
        self.whitening = nn.Linear(dim, dim) if self.config.whitening else None
        if self.whitening is not None:  # identity until fitted or loaded
            nn.init.eye_(self.whitening.weight)
            nn.init.zeros_(self.whitening.bias)

    @property
    def descriptor_dim(self) -> int:
        return self.gem_dim

    @property
    def gem_dim(self) -> int:
        return feature_channels(self.backbone)[-1]

    def aggregate(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C) L2-normalised GeM of conv5 at one scale: what the loss trains."""
        return F.normalize(self.gem(self.backbone(images)[-1]), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        power = self.gem.p if self.config.scale_power and len(self.config.scales) > 1 else 1.0
        scaled = [images if s == 1 else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
                  for s in self.config.scales]
        powered = torch.stack([self.aggregate(x).pow(power) for x in scaled])
        pooled = F.normalize(powered.mean(dim=0).pow(1 / power), dim=1)
        return pooled if self.whitening is None else F.normalize(self.whitening(pooled), dim=1)

    def initialisation_input(self, split: Any, recipe: TripletRecipe, embed: Any, seed: int) -> None:
        """Nothing to initialise (no k-means): fine-tuning starts from the trunk's weights and p = 3."""

    def initialise(self, _: None, seed: int) -> dict[str, float]:
        return {}

    def finalise(self, training_embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """After training: fit Lw on (N, C) single-scale descriptors of the training images, each image paired
        with the next one of its class."""
        if self.whitening is None:
            return {}
        order = np.argsort(labels, kind="stable")
        same = labels[order[:-1]] == labels[order[1:]]
        mean, projection = learn_whitening(training_embeddings, order[:-1][same], order[1:][same])
        with torch.no_grad():
            self.whitening.weight.copy_(torch.from_numpy(projection))
            self.whitening.bias.copy_(torch.from_numpy(-projection @ mean))
        return {"whitening_pairs": float(same.sum())}

    @classmethod
    def convert_weights(cls, path: Path, config: Config) -> RetrievalMethod:
        assert isinstance(config, GeMConfig)
        return convert_cirtorch_checkpoint(cls, read_cirtorch_checkpoint(path), config, path)


def learn_whitening(descriptors: np.ndarray, queries: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Lw from (N, D) descriptors and matching pairs (index arrays): mean m (D,) of the queries, then
    P = R S^(-1/2) with S the covariance of the pairs' differences (its inverse Cholesky factor, jittered until
    positive definite) and R the eigenvectors of the whitened descriptors' scatter, largest first; x -> P (x - m)."""
    data = descriptors.astype(np.float64)
    if len(queries) == 0:
        raise InputError("learning the whitening needs at least one pair of images of the same class", "labels")
    mean = data[queries].mean(axis=0)
    differences = data[queries] - data[positives]
    scatter = differences.T @ differences / len(differences)
    jitter = 0.0
    while True:
        try:
            inverse_root = np.linalg.inv(np.linalg.cholesky(scatter + jitter * np.eye(len(scatter))))
            break
        except np.linalg.LinAlgError:
            jitter = 1e-10 if jitter == 0 else jitter * 10
    whitened = (data - mean) @ inverse_root.T
    eigenvalues, eigenvectors = np.linalg.eigh(whitened.T @ whitened)
    return mean.astype(np.float32), (eigenvectors[:, ::-1].T @ inverse_root).astype(np.float32)


def read_cirtorch_checkpoint(path: Path) -> dict[str, Any]:
    """The authors' checkpoint ({'state_dict', 'meta'}), read without running code from it (numpy arrays allowed)."""
    multiarray = np._core.multiarray  # type: ignore[attr-defined]
    allowed = [np.ndarray, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType, multiarray._reconstruct,
               (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    try:
        with torch.serialization.safe_globals(allowed):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("no such weights file", path) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign or corrupt file
        raise InputError(f"not a readable PyTorch file ({type(error).__name__})", path) from None
    if not (isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict)
            and isinstance(payload.get("meta"), dict)):
        raise InputError("expected a cnnimageretrieval-pytorch checkpoint {'state_dict', 'meta'}", path)
    return payload


# Our state-dict names -> the authors' (torchvision ResNet children as ``features.i``).
_RENAMES = ((r"^backbone\.conv1\.", "features.0."), (r"^backbone\.bn1\.", "features.1."),
            (r"^backbone\.layer([1-4])\.", "features.{}."), (r"^gem\.p$", "pool.p"))
_BLOCKS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34", ((3, 4, 6, 3), True): "resnet50",
           ((3, 4, 23, 3), True): "resnet101", ((3, 8, 36, 3), True): "resnet152"}


def cirtorch_name(ours: str) -> str:
    """The authors' name of one of our keys (``backbone.layer3.0.conv1.weight`` -> ``features.6.0.conv1.weight``)."""
    for pattern, template in _RENAMES:
        match = re.match(pattern, ours)
        if match:
            return template.format(*(int(g) + 3 for g in match.groups())) + ours[match.end():]
    raise KeyError(f"no cirtorch name for {ours}")


def cirtorch_backbone(state: Mapping[str, Any], source: Path | str) -> str:
    """The timm ResNet whose blocks per stage (and bottleneck ``conv3``) the state dict's ``features.4..7`` hold."""
    blocks = tuple(len({k.split(".")[2] for k in state if k.startswith(f"features.{i}.")}) for i in range(4, 8))
    bottleneck = any(k.startswith("features.4.0.conv3.") for k in state)
    if (blocks, bottleneck) not in _BLOCKS:
        raise InputError(f"blocks per stage {blocks} in features.4..7 are not a torchvision ResNet", source)
    return _BLOCKS[(blocks, bottleneck)]


def convert_cirtorch_checkpoint(cls: type[GeMMethod], payload: Mapping[str, Any], config: GeMConfig,
                                source: Path | str) -> GeMMethod:
    """``cls`` holding the authors' network: every tensor fills one of ours with its shape (BN counters of old files
    excepted), the Lw of ``meta`` (multi-scale or single-scale, as ``config.scales``) becomes the whitening, and the
    meta's mean/std the protocol's; any other difference is one error listing them all."""
    state, meta = payload["state_dict"], payload["meta"]
    if meta.get("pooling") != "gem" or meta.get("whitening") or meta.get("regional") or meta.get("local_whitening"):
        raise InputError(f"only GeM networks without a whitening or regional layer convert (meta: pooling "
                         f"{meta.get('pooling')!r}, whitening {meta.get('whitening')}, regional "
                         f"{meta.get('regional')})", source)
    model = cls(dataclasses.replace(config, backbone=cirtorch_backbone(state, source)))
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("whitening.")}
    names = {ours: cirtorch_name(ours) for ours in own}
    missing = sorted(t for o, t in names.items() if t not in state and not o.endswith("num_batches_tracked"))
    unused = sorted(set(state) - set(names.values()))
    shapes = sorted(f"{t}: file {tuple(state[t].shape)} vs model {tuple(own[o].shape)}"
                    for o, t in names.items() if t in state and state[t].shape != own[o].shape)
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) \
        + ([f"unused: {', '.join(unused)}"] if unused else []) \
        + ([f"shape mismatch: {'; '.join(shapes)}"] if shapes else [])
    if problems:
        raise InputError("the released GeM network does not match the model:\n  " + "\n  ".join(problems), source)
    converted = {**model.state_dict(), **{o: state[t] for o, t in names.items() if t in state}}
    if model.whitening is not None:
        converted.update(_whitening_state(meta, "ms" if len(config.scales) > 1 else "ss", model.gem_dim, source))
    model.load_state_dict(converted, strict=True)
    model.protocol = dataclasses.replace(model.protocol, mean=tuple(float(v) for v in meta["mean"]),
                                         std=tuple(float(v) for v in meta["std"]))
    return model


def _whitening_state(meta: Mapping[str, Any], kind: str, dim: int, source: Path | str) -> dict[str, torch.Tensor]:
    """``whitening.weight`` P and ``whitening.bias`` -P m from ``meta['Lw'][WHITENING_SET][kind]``."""
    try:
        learned = meta["Lw"][WHITENING_SET][kind]
        projection = torch.as_tensor(np.asarray(learned["P"]), dtype=torch.float64)
        mean = torch.as_tensor(np.asarray(learned["m"]), dtype=torch.float64).reshape(-1)
    except (KeyError, TypeError) as error:
        raise InputError(f"meta has no learned whitening Lw['{WHITENING_SET}']['{kind}'] ({error}); the Config field "
                         "whitening=false gives the descriptors without it", source) from None
    if projection.shape != (dim, dim) or mean.shape != (dim,):
        raise InputError(f"Lw P {tuple(projection.shape)} and m {tuple(mean.shape)} do not fit {dim}-D", source)
    return {"whitening.weight": projection.float(), "whitening.bias": (-projection @ mean).float()}
