"""``reproduce METHOD --plan``: what a reproduction would download, train and evaluate, and how long it would take on
a named GPU, printed without fetching, computing on images or writing anything.

Time is estimated from floating-point operations: each forward pass is counted by ``torch.utils.flop_counter`` on
the meta device (no memory, no arithmetic) at the image sizes the method's protocol gives a dataset's typical image,
then divided by the GPU's throughput: its datasheet's dense bfloat16 peak times an assumed utilisation
(:data:`UTILISATION`; convolutional trunks at batch 16 on whole images reach a fraction of peak, the fraction is not
measured here). Training counts forward and backward as three forwards per image. Reading, resizing and search are
not counted: the estimate is a lower bound of the order of magnitude, not a promise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.core.acquire import is_acquired
from datasets import load_plugins as load_datasets
from datasets.base import DatasetSpec
from methods.base import RetrievalMethod
from methods.initialisation import INITIALISATIONS


@dataclass(frozen=True)
class GPU:
    name: str
    peak_flops: float  # dense bfloat16, per second
    source: str


GPUS = {"h100": GPU("NVIDIA H100 SXM", 989e12, "NVIDIA H100 Tensor Core GPU datasheet: 989 TFLOPS dense BF16")}
UTILISATION = 0.3  # assumed fraction of the peak a ResNet/VGG forward at batch 16 achieves; not measured
# Typical (width, height) of a dataset's images as distributed (before the protocol resizes them).
TYPICAL_SIZES = {"roxford5k": (1024, 768), "rparis6k": (1024, 768), "oxford5k": (1024, 768),
                 "paris6k": (1024, 768), "holidays": (2048, 1536), "pitts30k": (640, 480), "pitts250k": (640, 480),
                 "tokyo247": (640, 480), "gldv2": (640, 480)}


def forward_flops(model: RetrievalMethod, size: tuple[int, int]) -> float:
    """Floating-point operations of one forward pass of ``model`` (built on the meta device) on one image of
    ``size`` (width, height) at every protocol scale."""
    protocol, (width, height) = model.protocol, size
    if protocol.resize == "square":
        assert protocol.max_size is not None
        sides = [(int(s * protocol.max_size),) * 2 for s in protocol.scales]
    else:
        longest = max(width, height)
        factor = 1.0 if protocol.max_size is None or longest <= protocol.max_size else protocol.max_size / longest
        sides = [(max(1, int(width * factor * s)), max(1, int(height * factor * s))) for s in protocol.scales]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for w, h in sides:
            model(torch.empty(1, 3, h, w, device="meta"))
    return float(counter.get_total_flops())


def _files(spec: DatasetSpec, root: Path, shown: int = 4) -> list[str]:
    """One line per file of ``spec`` (its size where declared, present or where from), ``shown`` at most."""
    folder = spec.folder(root)
    lines = []
    for file in spec.files:
        state = "present" if is_acquired(folder, file) or (folder / file.name).exists() else (
            "on request: " + file.manual if file.manual else f"from {urlparse(file.urls[0]).netloc}")
        size = f"{file.size / 1e9:.2f} GB" if file.size else "size not declared"
        lines.append(f"    {spec.name}/{file.name} ({size}; {state})")
    more = len(lines) - shown
    return lines if more <= 1 else lines[:shown] + [f"    {spec.name}: and {more} more files like the last"]


def _counts(spec: DatasetSpec) -> tuple[int, int] | None:
    counts = getattr(spec, "expected_counts", None)
    return counts.get("test") if isinstance(counts, dict) else counts


def plan_lines(method: type[RetrievalMethod], root: Path, gpu: str = "h100") -> list[str]:
    """The plan of ``reproduce METHOD`` as printed lines; nothing is fetched, computed on images or written."""
    reproduction, device = getattr(method, "reproduction", None), GPUS[gpu]
    if reproduction is None:
        return [f"{method.name} declares no reproduction: give --dataset and --weights to `reproduce`"]
    registry = load_datasets()
    datasets = [registry.get(name)() for name in reproduction.datasets]
    training = reproduction.training
    needed = {spec.name: spec for d in datasets for spec in (d, *(registry.get(r)() for r in d.requires))}
    if training is not None:
        needed[training.dataset] = registry.get(training.dataset)()
    rate = device.peak_flops * UTILISATION
    lines = [f"reproduce {method.name}: time on {device.name} at {UTILISATION:.0%} of {device.peak_flops / 1e12:.0f} "
             f"TFLOPS ({device.source}; the utilisation is assumed)", "  download:"]
    for spec in needed.values():
        lines += _files(spec, root)
    for name in reproduction.weights:
        spec = method.weights[name]
        lines.append(f"    weights {name}: {Path(urlparse(spec.url or '').path).name or 'not published'} "
                     f"(size not declared; {spec.source})")
    model = _meta_model(method)
    weights = list(reproduction.weights)
    if training is not None:
        init = INITIALISATIONS[method.initialisations[model.config.backbone]]
        lines.append(f"    initialisation {method.initialisations[model.config.backbone]}: {init.file_name} "
                     f"({init.source})")
        images = training.steps * training.images_per_step
        seconds = 3 * images * forward_flops(model, TYPICAL_SIZES.get(training.dataset, (640, 480))) / rate
        lines += ["  train:", f"    {method.name} on {training.dataset} {training.split}, {training.steps} steps of "
                  f"{training.images_per_step} images from {method.initialisations[model.config.backbone]} "
                  f"({training.source}): about {_hours(seconds)}"]
        weights.append(f"{model.config.backbone}.{training.dataset} (the trained checkpoint)")
    lines.append("  evaluate:")
    for spec in datasets:
        counts = _counts(spec)
        if counts is None:
            lines.append(f"    {spec.name}: image count known once downloaded")
            continue
        flops = forward_flops(model, TYPICAL_SIZES.get(spec.name, (1024, 768)))
        lines.append(f"    {spec.name}: {counts[0]:,} database images + {counts[1]:,} queries, "
                     f"{flops / 1e9:.0f} GFLOP each, about {_hours(sum(counts) * flops / rate)} per weights")
    lines.append(f"    with weights: {', '.join(weights)}")
    return lines


def _meta_model(method: type[RetrievalMethod]) -> RetrievalMethod:
    with torch.device("meta"):
        return method().eval()


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"

