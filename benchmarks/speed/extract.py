"""How close the extraction pipeline comes to the model's own speed, measured in one run.

On the embedded benchmarks' images (synth_landmarks and synth_places, database and queries, whole), one
method with random weights (the default: NetVLAD on a ResNet-18 trunk, which needs no download):

- forward: the model alone on batches read beforehand, the pipeline's (images of one size, 8-bit pixels), with
  what the pipeline does on the device: normalising, channels_last;
- pipeline: :func:`benchmarks.evaluation.extract.extract_all`, from file names to descriptors (headers, decoding and
  resizing in DataLoader workers, batches, transfer, normalising, model);
- one by one: :func:`benchmarks.evaluation.extract.extract_one_by_one`, read one image, embed it, next, the way most
  published evaluation code extracts;
- read: every image read (:func:`benchmarks.evaluation.extract.read_pixels`: decoded, resized), no model: the work a
  pipeline must hide. Where images are read in the main process (no workers: 2-core CPUs), it adds to the
  forward, so ``forward / (forward + read)`` is the most the pipeline can reach there (``serial_ceiling``).

The figure of merit is pipeline throughput / forward throughput (1.0: reading images costs nothing). The
three run back to back in each of ``repeat`` rounds; a ratio is the median over rounds of the ratio within a
round (back-to-back runs see the same load on a shared machine), images/s the best round.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.core.acquire import AcquireOptions
from benchmarks.evaluation.extract import (
    ExtractOptions,
    batches_by_size,
    channels_last,
    embed_batch,
    extract_all,
    extract_one_by_one,
    output_sizes,
    read_pixels,
)
from benchmarks.speed import best_of, machine
from datasets import load_plugins as load_datasets
from methods import load_plugins as load_methods

DATASETS = ("synth_landmarks", "synth_places")
NETVLAD_RESNET18 = {"backbone": "resnet18", "feature_index": 3, "drop_final_relu": False, "num_clusters": 16,
                    "whiten_dim": None}


def embedded_images(root: Path | None) -> list[Path]:
    """Database and query images of the embedded benchmarks under ``root`` (default $BENCH_DATA); where they
    are not there, they are generated under a temporary root (the data root is never written to)."""
    root = root or (Path(os.environ["BENCH_DATA"]) if os.environ.get("BENCH_DATA") else None)
    specs: list[Any] = [load_datasets().get(name)() for name in DATASETS]  # GeneratedDataset
    if root is None or any(spec.manifest(root) is None for spec in specs):
        root = Path(tempfile.mkdtemp(prefix="speed-extract-"))
        for spec in specs:
            spec.prepare(root, AcquireOptions())
    return [path for spec in specs for part in _parts(spec.load(root, None)) for path in part]


def _parts(loaded: Any) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    return loaded.db_paths, loaded.query_paths


def run(method: str = "netvlad", config: dict[str, Any] | None = NETVLAD_RESNET18, root: Path | None = None,
        repeat: int = 3, batch_size: int = 16, num_workers: int = -1, device: str = "cpu", limit: int | None = None
        ) -> dict[str, Any]:
    """Images per second of forward, pipeline and one-by-one extraction, their ratios, machine and versions
    (on the first ``limit`` images when given)."""
    paths = embedded_images(root)[:limit]
    cls = load_methods().get(method)
    torch.manual_seed(0)
    model = cls(cls.config_class(**(config or {}))).eval().to(device)
    protocol = model.protocol
    options = ExtractOptions(batch_size=batch_size, device=device, num_workers=num_workers)
    batches = batches_by_size(output_sizes(paths, protocol), batch_size)
    loaded = [torch.from_numpy(np.stack([read_pixels(paths[i], protocol) for i in batch])) for batch in batches]
    if device.startswith("cuda"):
        loaded = [pixels.pin_memory() for pixels in loaded]
    target = torch.device(device)

    def forward() -> None:
        with channels_last(model) as module:
            for pixels in loaded:
                embed_batch(model, pixels, protocol, target, module)

    def pipeline() -> None:
        extract_all(model, paths, protocol, None, options)

    def one_by_one() -> None:
        extract_one_by_one(model, paths, protocol, device=device)

    def read() -> None:
        for path in paths:
            read_pixels(path, protocol)

    forward()  # warm-up: allocator, kernels for each input size
    timings: dict[str, list[float]] = {"forward": [], "pipeline": [], "one_by_one": [], "read": []}
    for _ in range(repeat):
        for name, fn in (("forward", forward), ("pipeline", pipeline), ("one_by_one", one_by_one), ("read", read)):
            timings[name].append(best_of(1, fn))  # each returns descriptors on the CPU: CUDA work is finished
    rate = {name: len(paths) / min(values) for name, values in timings.items()}
    ratio = {name: float(np.median(np.divide(timings["forward"], timings[name]))) for name in timings}
    return {
        "benchmark": "extract",
        "method": method, "config": model.config.to_dict(), "device": device, "n_images": len(paths),
        "image_sizes": sorted({f"{w}x{h}" for w, h in output_sizes(paths, protocol).tolist()}),
        "batch_size": batch_size, "num_workers": options.workers, "repeat": repeat,
        "images_per_s": {name: round(value, 2) for name, value in rate.items()},
        "pipeline_over_forward": round(ratio["pipeline"], 3),
        "one_by_one_over_forward": round(ratio["one_by_one"], 3),
        "serial_ceiling": round(float(np.median([f / (f + r) for f, r in zip(timings["forward"], timings["read"],
                                                                           strict=True)])), 3),
        "seconds": {name: [round(t, 3) for t in values] for name, values in timings.items()},
        "environment": machine(device),
    }
