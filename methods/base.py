"""The method contract: RetrievalMethod, its frozen Config, named WeightsSpecs and the test-time protocol.

A method maps a batch of normalised images to L2-normalised global descriptors; it never searches and
never scores (the evaluator does both, the same way for every method).
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from benchmarks.core.ids import NAME_PATTERN, SHA256_PATTERN, WEIGHTS_NAME_PATTERN
from datasets.base import CROP_ROUNDINGS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE_RESIZES = ("torch", "opencv")  # see benchmarks.evaluation.scales.resize_to_scale
SCALE_COMBINATIONS = ("average_descriptors", "sum_before_whitening")  # see benchmarks.evaluation.scales.embed_at_scales
RESIZES = ("longest_side", "square")
RESIZE_KERNELS = ("bilinear", "lanczos")  # PIL's BILINEAR and LANCZOS (= its former ANTIALIAS)


@dataclass(frozen=True)
class Config:
    """Every knob of a method that changes a number. Subclasses are frozen dataclasses with defaults.

    ``absent_means``: for a field added after checkpoints were saved, the value that a stored config lacking it
    computed with (the behaviour before the field existed), where that differs from the field's default."""

    absent_means: ClassVar[Mapping[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WeightsSpec:
    """Named weights ``arch.tag`` of a method.

    ``url`` None: no public file (trained by the user, given with ``--weights PATH``). ``sha256`` None where
    none is published: the first verified download records one in a lock file. ``conversion`` says how
    the released file maps onto our module; ``config`` holds the Config fields these weights need.
    """

    url: str | None
    sha256: str | None
    licence: str
    source: str
    conversion: str = ""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ExtractionProtocol:
    """How the paper extracts test descriptors.

    ``resize`` "longest_side": images whose longest side exceeds ``max_size`` are downscaled to it (aspect kept)
    before the scales apply; smaller ones are not enlarged (None: the image as it is); each scale is then resized
    from that (``scale_resize``: "torch" or "opencv", see ``benchmarks.evaluation.scales.resize_to_scale``).
    "square": at each scale s the read image is resized to a square of side ``int(s * max_size)`` (aspect not kept),
    a query (an image given a box) to ``int(s * max_size * query_scale)``, after being pasted centred on a white
    square of side ``max(query_pad, width, height)`` when ``query_pad`` is set (MSCFP's authors' code). Resizes of
    the read image use PIL's ``resize_kernel``. ``scale_combination``: "average_descriptors", each scale's
    descriptor L2-normalised, summed and re-normalised; "sum_before_whitening", the method's descriptors before its
    whitening head summed, L2-normalised, then through the head. ``crop_queries``: queries are cropped to their
    ground-truth box first (revisited protocol), the box's coordinates rounded (``crop_rounding`` "round",
    revisitop's Pillow crop) or truncated and clamped ("truncate", numpy slicing after ``int()``).
    ``exif_orientation``: the image is first turned as its EXIF orientation tag says (OpenCV's ``imread`` does so;
    PIL's ``open``, MATLAB's ``imread`` and revisitop's code read the stored pixels as they are).
    """

    max_size: int | None = 1024
    scales: tuple[float, ...] = (1.0,)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_queries: bool = True
    exif_orientation: bool = False
    crop_rounding: str = "round"
    scale_resize: str = "torch"
    scale_combination: str = "average_descriptors"
    resize: str = "longest_side"
    resize_kernel: str = "bilinear"
    query_scale: float = 1.0
    query_pad: int | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("crop_rounding", CROP_ROUNDINGS), ("scale_resize", SCALE_RESIZES),
                              ("scale_combination", SCALE_COMBINATIONS), ("resize", RESIZES),
                              ("resize_kernel", RESIZE_KERNELS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"protocol {name} must be {' or '.join(allowed)}, not {getattr(self, name)!r}")
        if self.resize == "square" and self.max_size is None:
            raise ValueError("protocol resize 'square' needs max_size, the square's side at scale 1")
        if self.resize != "square" and (self.query_scale != 1.0 or self.query_pad is not None):
            raise ValueError("protocol query_scale and query_pad apply to resize 'square' only")


@dataclass(frozen=True)
class TrainingPlan:
    """How a method without published weights is trained for its reproduction: ``steps`` of the recipe, each on
    ``images_per_step`` images (a batch of tuples or crops), on ``dataset``'s ``split``; ``source`` says where
    the numbers come from."""

    dataset: str
    steps: int
    images_per_step: int
    source: str
    split: str = "train"


@dataclass(frozen=True)
class Reproduction:
    """What ``python -m benchmarks reproduce METHOD`` needs: the datasets of the paper's table (with ``--r1m`` also
    ``r1m_datasets``), the published weights evaluated by default, or the ``training`` that makes them."""

    datasets: tuple[str, ...]
    weights: tuple[str, ...]
    r1m_datasets: tuple[str, ...] = ()
    training: TrainingPlan | None = None


class RetrievalMethod(nn.Module, abc.ABC):
    """Base of every method plugin: ``forward(images (B, 3, H, W)) -> (B, D)`` L2-normalised descriptors."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type[Config]]
    weights: ClassVar[Mapping[str, WeightsSpec]]
    protocol: ExtractionProtocol  # the class's; an instance holds its own where its weights expect other mean/std
    # backbone -> the initialisation (methods.initialisation) its recipe starts from: the paper's, and variants
    initialisations: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()

    @classmethod
    def config_for_trunk(cls, backbone: str) -> dict[str, Any]:
        """The Config fields a trunk needs (an initialisation's ``backbone``, and what goes with it)."""
        return {"backbone": backbone}

    @classmethod
    def recipe_for_trunk(cls, backbone: str) -> dict[str, Any]:
        """Recipe fields that name parts of the trunk (which layers train), for ``backbone``."""
        return {}

    @property
    @abc.abstractmethod
    def descriptor_dim(self) -> int:
        """D, the length of the descriptors ``forward`` returns."""

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images normalised with ``protocol.mean``/``std`` -> (B, D) unit-norm descriptors."""

    @classmethod
    def convert_weights(cls, path: Path, config: Config) -> RetrievalMethod:
        """The model holding a published weights file (in the format its WeightsSpec's ``conversion`` names)."""
        raise NotImplementedError(f"{cls.name} has no converter for published weights ({path})")


def weights_problems(name: str, spec: WeightsSpec, config_class: type[Config]) -> list[str]:
    """What is wrong with one WeightsSpec (empty when it is sound)."""
    problems = []
    if not WEIGHTS_NAME_PATTERN.match(name):
        problems.append(f"weights name {name!r} is not 'arch.tag' in lowercase")
    if spec.sha256 is not None and not SHA256_PATTERN.match(spec.sha256):
        problems.append(f"weights {name}: sha256 {spec.sha256!r} is not 64 lowercase hex digits")
    if spec.url is not None and not spec.url.startswith(("https://", "http://")):
        problems.append(f"weights {name}: url {spec.url!r} is not http(s)")
    if not spec.licence or not spec.source:
        problems.append(f"weights {name}: licence and source must be stated")
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = set(spec.config) - fields
    if unknown:
        problems.append(f"weights {name}: config names unknown field(s) {sorted(unknown)}")
    return problems


def method_problems(registered_name: str, cls: type[RetrievalMethod], image_size: int = 64) -> list[str]:
    """Contract check of a method plugin: declarations, then a forward pass on random images."""
    problems = []
    if not (isinstance(cls, type) and issubclass(cls, RetrievalMethod)):
        return [f"{registered_name}: {cls!r} does not subclass RetrievalMethod"]
    if getattr(cls, "name", None) != registered_name or not NAME_PATTERN.match(registered_name):
        problems.append(f"{registered_name}: class name attribute {getattr(cls, 'name', None)!r} differs")
    if not getattr(cls, "description", ""):
        problems.append(f"{registered_name}: no one-line description")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and issubclass(config_class, Config)
            and dataclasses.is_dataclass(config_class)
            and config_class.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        return problems + [f"{registered_name}: config_class must be a frozen dataclass subclassing Config"]
    if not isinstance(getattr(cls, "protocol", None), ExtractionProtocol):
        problems.append(f"{registered_name}: protocol must be a ExtractionProtocol")
    for weights_name, spec in getattr(cls, "weights", {}).items():
        problems += [f"{registered_name}: {p}" for p in weights_problems(weights_name, spec, config_class)]
    model = cls(config_class()).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(torch.randn(2, 3, image_size, image_size))
    if tuple(out.shape) != (2, model.descriptor_dim):
        problems.append(f"{registered_name}: forward gave shape {tuple(out.shape)}, not (2, {model.descriptor_dim})")
    elif not torch.isfinite(out).all() or not torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-4):
        problems.append(f"{registered_name}: descriptors are not finite and L2-normalised")
    return problems


def protocol_with(protocol: ExtractionProtocol, pairs: Sequence[str]) -> ExtractionProtocol:
    """``protocol`` with ``FIELD=VALUE`` pairs applied (``train --protocol max_size=128``); a bad pair is a
    ValueError naming the field and the values it takes."""
    return dataclasses.replace(protocol, **parse_overrides(ExtractionProtocol, pairs))


def protocol_changes(protocol: ExtractionProtocol, declared: ExtractionProtocol) -> dict[str, Any]:
    """The fields of ``protocol`` that differ from ``declared`` (its method's), other than the input
    normalisation (which goes with the weights: a checkpoint stores mean and std on their own)."""
    return {f.name: getattr(protocol, f.name) for f in dataclasses.fields(ExtractionProtocol)
            if f.name not in ("mean", "std") and getattr(protocol, f.name) != getattr(declared, f.name)}


def parse_overrides(cls: type, pairs: Sequence[str]) -> dict[str, Any]:
    """``["num_clusters=16", "whiten_dim=none", "pool_windows=2,3"]`` -> typed values for fields of the
    dataclass ``cls``, read as the field's declared type (``int | None``, ``float``, ``bool``, ``str``,
    ``tuple[int, ...]``); a value that reads as none of them is an error naming the field."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"{pair!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        out[key] = _read_as(text.strip(), fields[key], key)
    return out


_BOOLEANS = {"true": True, "yes": True, "false": False, "no": False}


def _read_as(text: str, declared: str, key: str) -> Any:
    for option in (t.strip() for t in declared.split("|")):
        if option == "None" and text.lower() in ("none", "null", "~"):
            return None
        if option == "bool" and text.lower() in _BOOLEANS:
            return _BOOLEANS[text.lower()]
        if option.startswith("tuple[") and option.endswith(", ...]"):
            items = [t.strip() for t in text.strip("[]()").split(",") if t.strip()]
            try:
                return tuple(_read_as(item, option[6:-6], key) for item in items)
            except ValueError:
                continue
        try:
            if option == "int":
                return int(text)
            if option == "float":
                return float(text)
        except ValueError:
            continue
        if option == "str":
            return text
    raise ValueError(f"{key}={text!r}: expected {declared}")
