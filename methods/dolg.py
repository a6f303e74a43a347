"""DOLG (Yang, He, Fan, Shi, Xue, Li, Ding, Huang, "DOLG: Single-Stage Image Retrieval with Deep Orthogonal
Fusion of Local and Global Features", ICCV 2021, arXiv 2108.02927).

A ResNet trunk; the local branch on res4 (:class:`~methods.layers.orthogonal_fusion.LocalBranch`: optional
multi-atrous block, then softplus self-attention over L2-normalised features), the global branch on res5 (GeM
with trainable p = 3, then FC res5 -> res4 channels); each local feature loses its projection on the global
feature, the rest is average-pooled, concatenated after the global feature, and an FC to 512 and L2 give the
descriptor. Channel counts come from the trunk (1024 / 2048 for ResNet-50/101). Trained with ArcFace
(margin 0.15, scale 30) on a landmark classification set (``benchmarks.training.classification``).

Test protocol of the official evaluation (``evaler/infer.py``, ``evaler/process.py``): the whole image, no
fixed resize, at scales 0.3535, 0.5, 0.7071, 1, 1.4142; each scale's descriptor L2-normalised, summed and
re-normalised; queries cropped to their box. Declared in ``protocol`` as that code reads and resizes: images
decoded with their EXIF orientation applied (``cv2.imread``), the box truncated by ``int()`` and sliced, each
scale resized by ``cv2.resize`` INTER_LINEAR to ``int(round(h * s))`` (no antialiasing);
``tests/test_dolg_protocol_reference.py`` holds the whole path to the official code's descriptors.

Released weights: the authors' pycls checkpoints (``model_state``; on a file host that needs an account) and
their public copy as plain state dicts on the Hugging Face hub (``Shiro/DOLG``, the layout of the ``dolg``
package on PyPI): the same key names, mapped key by key by :func:`convert_released_state`. Both were trained
without the multi-atrous block (``MODEL.WITH_MA: False`` in the official configuration) on BGR images; the
conversion flips the first convolution's input channels so that our RGB input gives the same activations.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.core.errors import InputError
from methods import METHODS
from methods.base import Config, ExtractionProtocol, Reproduction, RetrievalMethod, WeightsSpec
from methods.layers.backbone import create_backbone, feature_channels
from methods.layers.gem import GeM
from methods.layers.orthogonal_fusion import LocalBranch, MultiAtrous, orthogonal_component
from methods.recipes import ClassificationRecipe

log = logging.getLogger(__name__)

HUB = "https://huggingface.co/Shiro/DOLG/resolve/main"
RES4, RES5 = 3, 4  # timm feature indices of ResNet's layer3 (res4) and layer4 (res5)


def _released(file: str, sha256: str, depth: int) -> WeightsSpec:
    return WeightsSpec(
        url=f"{HUB}/{file}", sha256=sha256,
        licence="MIT (the authors' DOLG code, feymanpriv/DOLG); the Hugging Face copy states no licence",
        source=f"the authors' R{depth}-DOLG weights (feymanpriv/DOLG, trained on GLDv2-clean), as the plain state "
               "dict of the `dolg` package on the Hugging Face hub (Shiro/DOLG); sha256 from the hub's LFS pointer",
        conversion="pycls_dolg_state_dict", config={"backbone": f"resnet{depth}"})


@dataclass(frozen=True)
class DOLGConfig(Config):
    backbone: str = "resnet50"            # a timm ResNet: local branch on res4, global branch on res5
    multi_atrous: bool = False            # the released weights were trained without it
    dilations: tuple[int, ...] = (6, 12, 18)
    gem_p: float = 3.0                    # initial GeM exponent (trainable)
    dim: int = 512


@METHODS.register("dolg")
class DOLGMethod(RetrievalMethod):
    name = "dolg"
    description = "DOLG (ICCV 2021): ResNet res4 attention + res5 GeM, orthogonal fusion, 512-D"
    config_class = DOLGConfig
    config: DOLGConfig
    # As the official evaler/infer.py and process.py (63b117d): cv2.imread (EXIF orientation applied), the query
    # box truncated by int() and sliced, each scale cv2.resize INTER_LINEAR to int(round(h * s)) x int(round(w * s)).
    protocol = ExtractionProtocol(max_size=None, scales=(0.3535, 0.5, 0.7071, 1.0, 1.4142), crop_queries=True,
                                  exif_orientation=True, crop_rounding="truncate", scale_resize="opencv")
    # The official configuration (configs/resnet101_delg_8gpu.yaml): ArcFace margin 0.15, scale 30; SGD with
    # Nesterov momentum 0.9, weight decay 1e-4, learning rate 0.01 on a cosine over 100 epochs after 5 of
    # warm-up; 64 images a batch, 224 x 224 random crops with flips.
    recipe: ClassVar[ClassificationRecipe] = ClassificationRecipe(lr=0.01)
    # The official training starts from pycls's ImageNet ResNets (README: TRAIN.WEIGHTS R-101-1x64d_dds_8gpu.pyth).
    initialisations = {"resnet50": "resnet50.in1k_pycls", "resnet101": "resnet101.in1k_pycls"}
    weights = {
        "resnet50.gldv2": _released("r50_dolg_512.pt",
                                    "d5548bc7daa330b9396607411160b3c33cd2f0acc00f21daae849f390534d991", 50),
        "resnet101.gldv2": _released("r101_dolg_512.pt",
                                     "fa86f4bad51ec4f5d060108cdae7e09b82e0f62f6e2c3b245cfa2032a7373e2c", 101),
    }
    reproduction = Reproduction(datasets=("roxford5k", "rparis6k"), weights=tuple(weights),
                                r1m_datasets=("roxford5k+1m", "rparis6k+1m"))

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = create_backbone(cfg.backbone, (RES4, RES5))
        local, global_ = feature_channels(self.backbone)
        atrous = MultiAtrous(local, local // 2, local, cfg.dilations) if cfg.multi_atrous else None
        self.local = LocalBranch(local, local, atrous)
        self.gem = GeM(cfg.gem_p)
        self.global_fc = nn.Linear(global_, local)
        self.fusion_fc = nn.Linear(2 * local, cfg.dim)

    @property
    def descriptor_dim(self) -> int:
        return self.config.dim

    def fused(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 2 C4): the global feature, then the pooled local part orthogonal to it."""
        res4, res5 = self.backbone(images)
        global_ = self.global_fc(self.gem(res5))
        orthogonal = orthogonal_component(self.local(res4), global_).mean(dim=(2, 3))
        return torch.cat([global_, orthogonal], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fusion_fc(self.fused(images)), dim=1)

    @classmethod
    def convert_weights(cls, path: Path, config: Config) -> RetrievalMethod:
        assert isinstance(config, DOLGConfig)
        return convert_released_state(cls, read_released_state(path), config, path)


# Our parameter names -> the authors' (pycls ResNet ``globalmodel``, ``localmodel``, ``pool_g``, ``fc_t``, ``fc``).
_RENAMES = (
    (r"^backbone\.conv1\.", "globalmodel.stem.conv."),
    (r"^backbone\.bn1\.", "globalmodel.stem.bn."),
    (r"^backbone\.layer(\d+)\.(\d+)\.downsample\.0\.", "globalmodel.s{0}.b{1+}.proj."),
    (r"^backbone\.layer(\d+)\.(\d+)\.downsample\.1\.", "globalmodel.s{0}.b{1+}.bn."),
    (r"^backbone\.layer(\d+)\.(\d+)\.conv1\.", "globalmodel.s{0}.b{1+}.f.a."),
    (r"^backbone\.layer(\d+)\.(\d+)\.bn1\.", "globalmodel.s{0}.b{1+}.f.a_bn."),
    (r"^backbone\.layer(\d+)\.(\d+)\.conv2\.", "globalmodel.s{0}.b{1+}.f.b."),
    (r"^backbone\.layer(\d+)\.(\d+)\.bn2\.", "globalmodel.s{0}.b{1+}.f.b_bn."),
    (r"^backbone\.layer(\d+)\.(\d+)\.conv3\.", "globalmodel.s{0}.b{1+}.f.c."),
    (r"^backbone\.layer(\d+)\.(\d+)\.bn3\.", "globalmodel.s{0}.b{1+}.f.c_bn."),
    (r"^local\.multi_atrous\.image_pool\.1\.", "localmodel.aspp.im_pool.1."),
    (r"^local\.multi_atrous\.branches\.(\d+)\.", "localmodel.aspp.aspp.{0}."),
    (r"^local\.multi_atrous\.project\.0\.", "localmodel.aspp.conv_after.0."),
    (r"^local\.conv\.", "localmodel.conv1."),
    (r"^local\.bn\.", "localmodel.bn."),
    (r"^local\.score\.", "localmodel.conv2."),
    (r"^gem\.p$", "pool_g.p"),
    (r"^global_fc\.", "fc_t."),
    (r"^fusion_fc\.", "fc."),
)
TRAINING_HEAD = ("desc_cls.weight", "desc_cls.t")  # the ArcFace classifier over 81,313 classes: not a descriptor part
STAGE_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
STEM = "globalmodel.stem.conv.weight"


def released_name(ours: str) -> str:
    """The authors' name of one of our state-dict keys (``backbone.layer3.0.conv1.weight`` ->
    ``globalmodel.s3.b1.f.a.weight``)."""
    for pattern, template in _RENAMES:
        match = re.match(pattern, ours)
        if match:
            groups = match.groups()
            head = template.replace("{1+}", str(int(groups[1]) + 1) if len(groups) > 1 else "").format(*groups)
            return head + ours[match.end():]
    raise KeyError(f"no released name for {ours}")


def read_released_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a released file: a pycls checkpoint (``model_state``) or the plain state dict."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("no such weights file", path) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign or corrupt file
        raise InputError(f"not a readable PyTorch file ({type(error).__name__})", path) from None
    state = payload.get("model_state", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("expected a DOLG state dict, or a pycls checkpoint holding one under 'model_state'", path)
    return state


def released_architecture(state: Mapping[str, torch.Tensor], source: Path | str) -> tuple[str, bool]:
    """(timm backbone name, multi-atrous block present) read from a released state dict's keys."""
    blocks = tuple(len({key.split(".")[2] for key in state if key.startswith(f"globalmodel.s{i}.")})
                   for i in range(1, 5))
    if blocks not in STAGE_DEPTHS:
        raise InputError(f"residual blocks per stage {blocks} are not a ResNet-50/101/152 in pycls layout "
                         "(globalmodel.s1..s4)", source)
    return f"resnet{STAGE_DEPTHS[blocks]}", any(key.startswith("localmodel.aspp.") for key in state)


def convert_released_state(cls: type[DOLGMethod], state: Mapping[str, torch.Tensor], config: DOLGConfig,
                           source: Path | str) -> DOLGMethod:
    """``cls`` holding the authors' weights. Every tensor of the file fills one of ours (the ArcFace head excepted)
    and every one of ours is filled (BN ``num_batches_tracked`` excepted: unused at test time), with equal shapes;
    otherwise one error lists every mismatch. The trunk's depth and the multi-atrous block are the file's."""
    backbone, multi_atrous = released_architecture(state, source)
    if (backbone, multi_atrous) != (config.backbone, config.multi_atrous):
        log.info("%s: backbone %s, multi_atrous %s, as the file holds", source, backbone, multi_atrous)
    model = cls(replace(config, backbone=backbone, multi_atrous=multi_atrous))
    own = model.state_dict()
    names = {key: released_name(key) for key in own}
    missing = sorted(f"{theirs} (for {ours})" for ours, theirs in names.items()
                     if theirs not in state and not ours.endswith("num_batches_tracked"))
    unused = sorted(set(state) - set(names.values()) - set(TRAINING_HEAD))
    shapes = sorted(f"{theirs}: file {tuple(state[theirs].shape)} vs model {tuple(own[ours].shape)}"
                    for ours, theirs in names.items() if theirs in state and state[theirs].shape != own[ours].shape)
    if missing or unused or shapes:
        lines = ([f"missing: {', '.join(missing)}"] if missing else []) \
            + ([f"unused: {', '.join(unused)}"] if unused else []) \
            + ([f"shape mismatch: {'; '.join(shapes)}"] if shapes else [])
        raise InputError("the released DOLG weights do not match the model:\n  " + "\n  ".join(lines), source)
    converted: dict[str, Any] = {ours: state[theirs] for ours, theirs in names.items() if theirs in state}
    converted = {**own, **converted, "backbone.conv1.weight": state[STEM].flip(1)}  # BGR -> RGB input channels
    model.load_state_dict(converted, strict=True)
    return model
