"""NetVLAD (Arandjelovic, Gronat, Torii, Pajdla, Sivic, CVPR 2016 / TPAMI 2018, arXiv 1511.07247).

VGG-16 cropped at conv5_3 (before its ReLU and pooling); the conv5_3 column features, L2-normalised
(``preL2``), are pooled by a K = 64 NetVLAD layer (intra-normalisation, then L2) into 32768-D; a learned
PCA-whitening to 4096-D and L2 give the descriptor. Test images are used whole (Pittsburgh's 640 x 480);
larger ones (Tokyo 24/7 queries) are downscaled to at most 640 on the long side.

Released weights: the authors' MatConvNet models, as exported to plain MATLAB structs (``net.layers``: the
13 VGG-16 convolutions, the VLAD layer holding the assignment weights and the *negated* centroids, then the
whitening as a 1 x 1 convolution) and hosted for hloc; converted by :func:`convert_matconvnet_struct`. Also the
NetVLAD models released with Patch-NetVLAD (``vgg16.patchnetvlad_{pitts,mapillary}_{128,512,4096}``, ImageNet
input normalisation), converted by :func:`convert_patchnetvlad` (see :mod:`methods.patchnetvlad_weights`).
"""
from __future__ import annotations

import dataclasses
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
from methods.layers.netvlad import NetVLAD, kmeans
from methods.layers.whitening import PCAWhitening
from methods.patchnetvlad_weights import fill_from_release, patchnetvlad_weights, read_release
from methods.recipes import TripletRecipe


def _released(file: str, authors_model: str) -> WeightsSpec:
    """One of the authors' models as exported to a struct .mat and hosted by ETH CVG for hloc."""
    return WeightsSpec(
        url=f"https://cvg-data.inf.ethz.ch/hloc/netvlad/{file}", sha256=None,
        licence="MIT (the authors' netvlad code and models; struct export by netvlad_tf_open, MIT)",
        source=f"authors' {authors_model} (MatConvNet), exported to a struct by netvlad_tf_open's "
               "net_class2struct.m, hosted by ETH CVG for hloc",
        conversion="matconvnet_struct")


@dataclass(frozen=True)
class NetVLADConfig(Config):
    backbone: str = "vgg16"          # any timm model with features_only
    feature_index: int = 4           # which of its feature maps: VGG-16's 4 is conv5_3
    drop_final_relu: bool = True     # take that map before its ReLU (the paper's VGG-16 crop)
    num_clusters: int = 64
    assignment_bias: bool = False    # False: the released models' `vlad` layer; True: the paper's general b_k
    whiten_dim: int | None = 4096    # None: the K * D NetVLAD vector itself


class VLADMethod(RetrievalMethod):
    """Local descriptors -> NetVLAD -> PCA-whitening -> L2; subclasses say how local descriptors are made."""

    config: Any
    recipe: ClassVar[TripletRecipe]  # the paper's training recipe (``train --set`` overrides its fields)

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = create_backbone(cfg.backbone, (cfg.feature_index,), drop_final_relu=cfg.drop_final_relu)
        self.vlad = self.vlad_layer()
        self.whitening = PCAWhitening(self.vlad.output_dim, cfg.whiten_dim) if cfg.whiten_dim else None

    def vlad_layer(self) -> NetVLAD:
        """The NetVLAD layer over ``local_dim``-D local descriptors (subclasses may choose its options)."""
        return NetVLAD(self.local_dim, self.config.num_clusters, self.config.assignment_bias)

    @property
    def local_dim(self) -> int:
        return feature_channels(self.backbone)[-1]

    @property
    def descriptor_dim(self) -> int:
        return self.whitening.linear.out_features if self.whitening is not None else self.vlad.output_dim

    def local_descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D, N) L2-normalised local descriptors."""
        return F.normalize(self.backbone(images)[-1].flatten(2), dim=1)

    def aggregate(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K * D) NetVLAD vectors: what the triplet loss trains, before whitening."""
        return self.vlad(self.local_descriptors(images))

    def whiten(self, vlad: torch.Tensor) -> torch.Tensor:
        """(B, K * D) -> (B, D_out): the whitening head (PCA-whitening, then L2; the identity without one)."""
        return vlad if self.whitening is None else F.normalize(self.whitening(vlad), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.whiten(self.aggregate(images))

    def initialise(self, local_sample: np.ndarray, seed: int) -> dict[str, float]:
        """Before training: centroids by k-means of (M, D) sampled local descriptors, then the paper's alpha."""
        centroids = kmeans(local_sample, self.vlad.num_clusters, seed=seed)
        return {"alpha": self.vlad.initialise(centroids, local_sample)}

    def finalise(self, training_embeddings: np.ndarray) -> dict[str, float]:
        """After training: fit the PCA-whitening on (N, K * D) NetVLAD vectors of training images."""
        if self.whitening is None:
            return {}
        eigenvalues = self.whitening.fit(training_embeddings)
        return {"whitening_energy_kept": float(eigenvalues.sum())}


@METHODS.register("netvlad")
class NetVLADMethod(VLADMethod):
    name = "netvlad"
    description = "NetVLAD (CVPR 2016): VGG-16 conv5_3, NetVLAD K=64, PCA-whitening 4096-D"
    config_class = NetVLADConfig
    protocol = ExtractionProtocol(max_size=640, scales=(1.0,), crop_queries=True)
    # Paper Sec. 4 and Appendix: margin 0.1 on squared distances; best potential positive (<= 10 m),
    # 10 hardest negatives (> 25 m) of 1000 sampled plus last time's; SGD, momentum 0.9, weight decay
    # 0.001, learning rate 0.0001 halved every 5 epochs, 4 tuples a batch, cache recomputed every 1000
    # queries; trained from conv5_1 up on Pitts30k-train or Tokyo Time Machine.
    recipe = TripletRecipe(mining="places", margin=0.1, lr=1e-4, momentum=0.9, weight_decay=1e-3,
                             tuples_per_batch=4, n_negatives=10, n_sampled_negatives=1000, cache_refresh=1000,
                             lr_halving_epochs=5, train_from="features_24")
    # The authors trained from MatConvNet's imagenet-vgg-verydeep-16; the suite starts from torchvision's ImageNet
    # VGG-16 as the PyTorch re-implementations do (pytorch-NetVlad, Patch-NetVLAD): the same architecture and
    # training data, a file in torchvision's layout read by timm's VGG-16 key for key, and the RGB ImageNet
    # mean/std that those re-implementations' released NetVLAD weights expect.
    initialisations = {"vgg16": "vgg16.in1k_torchvision"}
    weights = {"vgg16.pitts30k": _released("Pitts30K_struct.mat", "vd16_pitts30k_conv5_3_vlad_preL2_intra_white"),
               "vgg16.tokyotm": _released("TokyoTM_struct.mat", "vd16_tokyoTM_conv5_3_vlad_preL2_intra_white"),
               **patchnetvlad_weights()}
    # The paper's Table 1 (Pitts, Tokyo) and Table 3 (retrieval) rows of the authors' released models.
    reproduction = Reproduction(datasets=("pitts30k", "pitts250k", "tokyo247", "oxford5k", "paris6k", "holidays"),
                                weights=("vgg16.pitts30k", "vgg16.tokyotm"))

    @classmethod
    def config_for_trunk(cls, backbone: str) -> dict[str, Any]:
        """conv5_3 before its ReLU is VGG's crop; other trunks give their last map as it is."""
        return {"backbone": backbone, "drop_final_relu": backbone.startswith("vgg")}

    @classmethod
    def recipe_for_trunk(cls, backbone: str) -> dict[str, Any]:
        """The paper trains conv5 (from conv5_1): the trunk's last stage, whatever the trunk."""
        last_stage = {"vgg16": "features_24", "efficientnet_lite0": "blocks.5"}
        if backbone in last_stage:
            return {"train_from": last_stage[backbone]}
        return {"train_from": "layer4"} if backbone.startswith(("resnet", "resnext")) else {}

    @classmethod
    def convert_weights(cls, path: Path, config: Config) -> RetrievalMethod:
        assert isinstance(config, NetVLADConfig)
        if _is_mat_file(path):
            return convert_matconvnet_struct(cls, path, config)
        return convert_patchnetvlad(cls, path, config)


def _is_mat_file(path: Path) -> bool:
    """MATLAB's .mat files (v5 and the HDF5-based v7.3) open with a text header "MATLAB ..."."""
    try:
        with open(path, "rb") as file:
            return file.read(6) == b"MATLAB"
    except OSError as error:
        raise InputError(f"cannot read weights file ({error})", path) from None


def convert_patchnetvlad(cls: type[VLADMethod], path: Path, config: NetVLADConfig) -> VLADMethod:
    """``cls`` holding Patch-NetVLAD's released NetVLAD (:mod:`methods.patchnetvlad_weights`); K, the whitening
    size and the assignment bias come from the file."""
    release = read_release(path)
    model = cls(dataclasses.replace(config, num_clusters=release.num_clusters, whiten_dim=release.num_pcs,
                                    assignment_bias=release.assignment_bias is not None))
    fill_from_release(model, release, path)
    return model


def _array(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _weighted_layers(path: Path) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """The weights of each layer that has any, in order, and the average image, from a struct .mat."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
        net = mat["net"]
        layers = np.atleast_1d(net.layers)
        average = _array(net.meta.normalization.averageImage).reshape(-1, 3)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise InputError(f"not a NetVLAD struct .mat with net.layers and net.meta.normalization.averageImage "
                         f"({type(error).__name__}: {error})", path) from None
    weighted = []
    for layer in layers:
        weights = getattr(layer, "weights", None)
        if isinstance(weights, np.ndarray) and weights.dtype != object:
            weights = [weights]  # loadmat squeezes a one-element cell to its element
        parts = [] if weights is None else [_array(w) for w in np.atleast_1d(np.asarray(weights, dtype=object))]
        if any(p.size for p in parts):
            weighted.append(parts)
    return weighted, average


def convert_matconvnet_struct(cls: type[VLADMethod], path: Path, config: NetVLADConfig) -> VLADMethod:
    """Build ``cls(config)`` from the authors' weights in struct form.

    MatConvNet kernels are (kh, kw, C_in, C_out), torch's (C_out, C_in, kh, kw); the VLAD layer holds the
    assignment weights (D, K) and minus the centroids (D, K); the whitening is a (1, 1, K * D, D_out) kernel
    over the d-major VLAD vector, which our NetVLAD layer also produces. Inputs are 0..255 minus the
    average image: mean = average / 255, std = 1 / 255 on our 0..1 images.
    """
    model = cls(config)
    layers, average = _weighted_layers(path)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    expect = len(convs) + 1 + (model.whitening is not None)
    if len(layers) < expect:
        raise InputError(f"{len(layers)} layers with weights; the {config.backbone} trunk, VLAD and whitening "
                         f"need {expect}", path)
    k, d = model.vlad.num_clusters, model.vlad.dim
    with torch.no_grad():
        for index, (conv, (kernel, bias)) in enumerate(zip(convs, layers, strict=False)):
            what = f"convolution {index + 1}"
            _fill(conv.weight, kernel, (*conv.kernel_size, conv.in_channels, conv.out_channels), (3, 2, 0, 1), path,
                  what)
            _fill(conv.bias, bias, (conv.out_channels,), (0,), path, f"{what} bias")
        assignment, negated_centroids = layers[len(convs)][:2]
        _fill(model.vlad.assignment.weight, assignment, (d, k), (1, 0), path, "VLAD assignment")
        _fill(model.vlad.centroids, -negated_centroids, (d, k), (1, 0), path, "VLAD centroids")
        if model.whitening is not None:
            kernel, bias = layers[len(convs) + 1][:2]
            out = model.whitening.linear.out_features
            _fill(model.whitening.linear.weight, kernel, (k * d, out), (1, 0), path, "whitening")
            _fill(model.whitening.linear.bias, bias, (out,), (0,), path, "whitening bias")
    if not np.allclose(average, average[0], atol=1e-3):
        raise InputError("the average image is not one colour; only a per-channel mean is supported", path)
    red, green, blue = (float(v) / 255 for v in average[0])
    model.protocol = dataclasses.replace(model.protocol, mean=(red, green, blue), std=(1 / 255, 1 / 255, 1 / 255))
    return model


def _fill(target: torch.Tensor | None, array: np.ndarray, layout: tuple[int, ...], to_torch: tuple[int, ...],
          path: Path, what: str) -> None:
    """Copy ``array`` (MatConvNet ``layout``, squeezed by loadmat) into ``target``, axes ``to_torch``."""
    if target is None or array.size != int(np.prod(layout)):
        raise InputError(f"{what}: the file has shape {array.shape}, the model needs {layout}", path)
    target.copy_(torch.from_numpy(array.reshape(layout, order="C")).permute(*to_torch))
