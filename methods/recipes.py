"""The training recipes methods declare: what their papers train with, every field overridable (``train --set``).

The loops that run them live in :mod:`benchmarks.training` (``triplet`` and ``classification``).
"""
from __future__ import annotations

from dataclasses import dataclass

MINING = ("places", "classes")
LOSS_NAMES = ("triplet", "contrastive")


@dataclass(frozen=True)
class TripletRecipe:
    """A paper's training recipe; every field can be overridden (``train --set lr=0.01``)."""

    mining: str                         # "places": GPS tuples (NetVLAD); "classes": MSCFP Algorithm 1
    lr: float
    margin: float = 0.1                 # triplet: on squared Euclidean distances; contrastive: on distances
    loss: str = "triplet"               # one of LOSS_NAMES
    optimizer: str = "sgd"              # "sgd" (with momentum) or "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    tuples_per_batch: int = 4
    n_negatives: int = 10               # places: negatives per tuple
    n_sampled_negatives: int = 1000     # places: random definite negatives considered per query
    cache_refresh: int = 1000           # places: queries per round; classes: at most steps per round (mining period)
    lr_halving_epochs: int | None = None  # halve lr every this many epochs (passes over the training queries)
    lr_decay: float = 0.0               # and multiply it by exp(-lr_decay) every epoch (GeM: 0.01)
    train_from: str = ""                # backbone children before this one stay frozen ("": all train; "none": none)
    mining_classes: int = 512           # classes: k
    mining_batch: int = 2048            # classes: images embedded per mining
    rank_threshold: int = 100           # classes: case C drops a query whose first positive ranks beyond t
    cluster_images: int = 500           # images sampled for the initialisation (k-means; REMAP: KL weights)
    cluster_descriptors: int = 50000
    batch_size: int = 16                # images per forward when embedding without gradients
    frozen_batchnorm: bool = False      # batch norm uses its running statistics while training (small batches)

    def __post_init__(self) -> None:
        if self.mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}, got {self.mining!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}, got {self.loss!r}")


@dataclass(frozen=True)
class ClassificationRecipe:
    """A paper's classification recipe; every field can be overridden (``train --set lr=0.001``)."""

    lr: float
    margin: float = 0.15                # ArcFace angular margin (radians)
    scale: float = 30.0                 # ArcFace logit scale
    optimizer: str = "sgd"              # "sgd" (momentum, Nesterov) or "adam"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    batch_size: int = 64                # images per step, over all processes
    image_size: int = 224               # side of the square training crops
    min_crop_area: float = 0.08         # random crops cover this fraction of the image at least
    warmup_fraction: float = 0.05       # of the steps, with the learning rate rising linearly from 0.1 x
    state_every: int = 100              # steps between writes of the resumable state (and every minute)
    frozen_batchnorm: bool = False      # batch norm uses its running statistics while training (small batches)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if not 0 < self.min_crop_area <= 1:
            raise ValueError(f"min_crop_area must be in (0, 1], got {self.min_crop_area}")
