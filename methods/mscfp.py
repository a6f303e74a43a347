"""MSCFP (Vaccaro, Bertini, Uricchio, Del Bimbo, "Image Retrieval using Multi-scale CNN Features Pooling",
ICMR 2020, arXiv 2004.09695).

ResNet conv5 features are max-pooled with 2 x 2 and 3 x 3 windows at stride 1; each column of both pooled
maps is cut into 512-D sub-vectors, the local descriptors of a NetVLAD layer (K = 64, so 64 x 512 = 32768-D)
initialised by k-means; PCA-whitening and L2 give the descriptor. Trained with a triplet loss (margin 0.1,
squared distances) on triplets from the paper's Algorithm 1 (``methods.mining.mscfp_triplets``).

The defaults compute what the authors' code computes (github.com/fede-vaccaro/NetVlad at commit 1896f71,
which produced the paper's numbers): ``netvlad_model.py`` ``NetVladBase.features`` cuts the columns into
512-D parts (``netvlad.py`` ``make_locals``) and L2-normalises each part (``part_normalisation=True``);
``netvlad.py`` ``NetVLAD.forward`` intra-normalises the (D, K) VLAD matrix over the clusters, for each
dimension (``vlad_normalisation="over_clusters"``), then flattens it d-major and L2-normalises it. The
paper's reading is the variant ``part_normalisation=False`` (the whole 2048-D column L2-normalised, then
cut) with ``vlad_normalisation="per_cluster"`` (NetVLAD's intra-normalisation of each cluster's residual).
Also as their code: the NetVLAD layer starts from MiniBatchKMeans centroids of the parts with alpha 30 and
b_k = -alpha |c_k| (``netvlad_init="authors"``; "paper" is NetVLAD's), and the test protocol (``protocol`` below:
squares per scale, padded queries, the raw VLAD vectors summed over scales before the whitening).
``tests/test_mscfp_reference.py`` holds the suite to the authors' descriptor of one photo on shared weights, and
``tests/test_mscfp_protocol_reference.py`` to their whole test protocol.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from methods import METHODS
from methods.base import ExtractionProtocol, Reproduction, TrainingPlan, WeightsSpec
from methods.layers.column_pooling import split_columns, stride1_max_pool_columns
from methods.layers.netvlad import NetVLAD
from methods.netvlad import NetVLADConfig, VLADMethod
from methods.recipes import TripletRecipe

NETVLAD_INITS = ("authors", "paper")
AUTHORS_ALPHA = 30.0  # netvlad.py NetVLAD(alpha=30.0), never changed by their code


@dataclass(frozen=True)
class MSCFPConfig(NetVLADConfig):
    backbone: str = "resnet101"
    feature_index: int = 4             # conv5 (res5)
    drop_final_relu: bool = False
    num_clusters: int = 64
    assignment_bias: bool = True
    whiten_dim: int | None = 4096
    pool_windows: tuple[int, ...] = (2, 3)
    subvector_dim: int = 512
    part_normalisation: bool = True    # True: each 512-D part to unit norm (authors' code); False: the column
    vlad_normalisation: str = "over_clusters"  # authors' code; "per_cluster": NetVLAD's (the paper's reading)
    # "authors": MiniBatchKMeans centroids, alpha 30, b_k = -alpha |c_k| (their netvlad_model.py initialize_netvlad,
    # netvlad.py init_params); "paper": NetVLAD's (faiss k-means, alpha measured, b_k = -alpha |c_k|^2)
    netvlad_init: str = "authors"
    # checkpoints saved before these fields existed computed the paper's reading
    absent_means: ClassVar[Mapping[str, Any]] = {"part_normalisation": False, "vlad_normalisation": "per_cluster",
                                                 "netvlad_init": "paper"}

    def __post_init__(self) -> None:
        if self.netvlad_init not in NETVLAD_INITS:
            raise ValueError(f"netvlad_init must be {' or '.join(NETVLAD_INITS)}, not {self.netvlad_init!r}")


@METHODS.register("mscfp")
class MSCFPMethod(VLADMethod):
    name = "mscfp"
    description = "MSCFP (ICMR 2020): ResNet conv5, 2x2 + 3x3 stride-1 max-pooling, NetVLAD K=64, PCA-whitening"
    config_class = MSCFPConfig
    # The authors' extract_features_revisitop.py (at 1896f71, its Resize from netvlad_model.py get_transform as
    # it was before f9c011f removed it, which the script still calls): every image resized to squares of
    # int(r * side) for r = 3/2, 1, 2/3 by torchvision Resize((s, s), Image.ANTIALIAS), i.e. PIL's Lanczos on the
    # decoded image, aspect not kept; a query cropped to its box (PIL crop), pasted centred on a white square of
    # side max(256, w, h) (make_square), then resized to int(r * side * 0.7); the raw VLAD vectors summed over
    # scales, L2, PCA-whitening, L2. side = 336 (NetVladBase.input_shape, resnet-conf.yaml when the paper was
    # written, and Table 2's "224 + 336 + 504"); resnet-conf.yaml at 1896f71 says 512.
    protocol = ExtractionProtocol(max_size=336, scales=(1.5, 1.0, 2 / 3), crop_queries=True, resize="square",
                                  resize_kernel="lanczos", query_scale=0.7, query_pad=256,
                                  scale_combination="sum_before_whitening")
    # Sec. 3.2: triplet margin 0.1 on squared distances; Algorithm 1 over k = 512 classes, mining batches of
    # 2048 images, one triplet per class (about 250), mining every 8 iterations; t = 20 as the authors' code.
    recipe = TripletRecipe(mining="classes", margin=0.1, optimizer="adam", lr=1e-5, tuples_per_batch=32,
                             cache_refresh=8, mining_classes=512, mining_batch=2048, rank_threshold=20)
    # The authors' code loads cnnimageretrieval's Caffe-converted ImageNet ResNet-101 (fed RGB, ImageNet mean/std).
    initialisations = {"resnet101": "resnet101.in1k_caffe"}
    weights: ClassVar[dict[str, WeightsSpec]] = {}  # no public weights: trained by the user
    # The authors' resnet-conf.yaml on the day of the arXiv submission (1227e3d; 241 epochs at 1896f71): 400 epochs
    # of 400 steps, 6 triplets (18 images) a step, on GLDv2-clean.
    reproduction = Reproduction(datasets=("oxford5k", "paris6k", "holidays"), weights=(),
                                training=TrainingPlan("gldv2", steps=160_000, images_per_step=18,
                                                      source="the authors' resnet-conf.yaml at 1227e3d"))

    @property
    def local_dim(self) -> int:
        return self.config.subvector_dim

    def vlad_layer(self) -> NetVLAD:
        cfg = self.config
        return NetVLAD(self.local_dim, cfg.num_clusters, cfg.assignment_bias, cfg.vlad_normalisation)

    def initialise(self, local_sample: np.ndarray, seed: int) -> dict[str, float]:
        """Before training: the authors' MiniBatchKMeans of (M, 512) parts (their random_state 424242 is the
        suite's ``seed``), alpha 30 (``netvlad_init="authors"``); or NetVLAD's initialisation ("paper")."""
        if self.config.netvlad_init == "paper":
            return super().initialise(local_sample, seed)
        from sklearn.cluster import MiniBatchKMeans

        fitted = MiniBatchKMeans(n_clusters=self.vlad.num_clusters, random_state=seed).fit(local_sample)
        self.vlad.initialise_fixed_alpha(fitted.cluster_centers_, AUTHORS_ALPHA)
        return {"alpha": AUTHORS_ALPHA}

    def local_descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, subvector_dim, N * C / subvector_dim) unit-norm parts (or parts of unit columns)."""
        columns = stride1_max_pool_columns(self.backbone(images)[-1], self.config.pool_windows)
        if self.config.part_normalisation:
            return F.normalize(split_columns(columns, self.config.subvector_dim), dim=1)
        return split_columns(F.normalize(columns, dim=1), self.config.subvector_dim)
