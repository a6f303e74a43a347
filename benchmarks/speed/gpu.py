"""DOLG ResNet-101 five-scale extraction on a GPU: throughput, its fraction of the GPU's bfloat16 peak, the
pipeline / forward ratio, and bfloat16-autocast descriptors against float32 (``python -m benchmarks speed gpu``).

Images are generated JPEGs of one size (default 1024 x 768, R1M's usual shape: its long side is 1024), so
every batch is full; DOLG's protocol keeps them whole (no max size) at scales 0.3535 to 1.4142. Weights are
random (seeded): speed does not depend on them, and nothing is downloaded. ``forward`` is the model on batches
read beforehand (normalised on the device, channels_last, bfloat16 autocast on CUDA: the pipeline's
arithmetic); ``pipeline`` is :func:`benchmarks.evaluation.extract.extract_all` from file names (DataLoader
workers decode).
FLOPs per image are counted by ``torch.utils.flop_counter`` on one batch (a multiply-add is 2 FLOPs).

The peak is the dense (no sparsity) bfloat16 tensor-core figure of NVIDIA's data sheets for the device name
(:data:`BF16_PEAK_TFLOPS`); on other devices, the CPU included, it is reported as unknown. The script runs on
the CPU too (tiny sizes: the tests), where the cosines compare CPU bfloat16 autocast with float32.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.core.atomic import atomic_write_text
from benchmarks.evaluation.extract import (
    ExtractOptions,
    channels_last,
    embed_at_scales,
    embed_batch,
    extract_all,
    normalise,
    read_pixels,
)
from benchmarks.speed import machine
from methods.dolg import DOLGConfig, DOLGMethod

# Dense bfloat16 tensor TFLOPS from NVIDIA's data sheets, by a substring of torch.cuda.get_device_name().
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2))


def bf16_peak_tflops(device_name: str) -> float | None:
    """The table's peak for ``device_name`` (None when it is not in the table)."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def _images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        grid = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(grid).resize(size, Image.Resampling.BILINEAR).save(paths[-1], quality=90)
    return paths


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cosines(model: DOLGMethod, pixels: torch.Tensor, device: torch.device) -> list[float]:
    """Cosine of each image's bfloat16-autocast descriptor with its float32 one (autocast on ``device``)."""
    images = normalise(pixels.to(device), model.protocol)
    with torch.inference_mode():
        fp32 = embed_at_scales(model, images, model.protocol).float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = embed_at_scales(model, images, model.protocol).float()
    return torch.nn.functional.cosine_similarity(fp32, bf16, dim=1).cpu().tolist()


def run(device: str = "cuda", n_images: int = 256, size: tuple[int, int] = (1024, 768), batch_size: int = 8,
        repeat: int = 3, out: Path | None = None, backbone: str = "resnet101") -> dict[str, Any]:
    """The figures (see the module docstring), best of ``repeat`` for each timing; also written to ``out``."""
    target = torch.device(device)
    torch.manual_seed(0)
    model = DOLGMethod(DOLGConfig(backbone=backbone)).eval().to(target)
    protocol = model.protocol
    options = ExtractOptions(batch_size=batch_size, device=device)
    with tempfile.TemporaryDirectory(prefix="speed-gpu-") as tmp:
        paths = _images(Path(tmp), n_images, size)
        batches = [torch.from_numpy(np.stack([read_pixels(p, protocol) for p in paths[i:i + batch_size]]))
                   for i in range(0, n_images, batch_size)]
        if target.type == "cuda":
            batches = [b.pin_memory() for b in batches]
        with channels_last(model) as module, FlopCounterMode(display=False) as counter:
            embed_batch(model, batches[0], protocol, target, module)
        flops_per_image = counter.get_total_flops() / len(batches[0])

        def forward() -> float:
            start = time.perf_counter()
            with channels_last(model) as module:
                for pixels in batches:
                    embed_batch(model, pixels, protocol, target, module)
                _synchronise(target)
            return time.perf_counter() - start

        def pipeline() -> float:
            start = time.perf_counter()
            extract_all(model, paths, protocol, None, options)
            _synchronise(target)
            return time.perf_counter() - start

        forward()  # warm-up: kernels, allocator
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        times: dict[str, list[float]] = {"forward": [], "pipeline": []}
        for _ in range(repeat):
            times["forward"].append(forward())
            times["pipeline"].append(pipeline())
        cosines = _cosines(model, batches[0], target)
    rate = {name: n_images / min(values) for name, values in times.items()}
    name = torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu"
    peak = bf16_peak_tflops(name) if target.type == "cuda" else None
    achieved = rate["forward"] * flops_per_image / 1e12
    figures = {
        "benchmark": "gpu", "method": "dolg", "backbone": backbone, "scales": list(protocol.scales),
        "device": name, "image_size": list(size), "n_images": n_images, "batch_size": batch_size,
        "workers": options.workers, "repeat": repeat,
        "precision": "bfloat16 autocast" if target.type == "cuda" else "float32",
        "images_per_s": {k: round(v, 3) for k, v in rate.items()},
        "pipeline_over_forward": round(float(np.median(np.divide(times["forward"], times["pipeline"]))), 3),
        "gflops_per_image": round(flops_per_image / 1e9, 2), "achieved_tflops": round(achieved, 3),
        "bf16_peak_tflops": peak if peak is not None else "unknown",
        "fraction_of_bf16_peak": round(achieved / peak, 4) if peak else "unknown",
        "bf16_vs_fp32_cosine": {"min": min(cosines), "mean": float(np.mean(cosines)), "n": len(cosines)},
        "gpu_peak_memory_bytes": torch.cuda.max_memory_allocated(target) if target.type == "cuda" else None,
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "environment": machine(device),
    }
    if out is not None:
        atomic_write_text(out, json.dumps(figures, indent=1))
    return figures
