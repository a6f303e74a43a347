"""A tiny model and a process that extracts images into a descriptor cache: the subject of the kill, lock and
torchrun tests (``python -m tests.extract_worker --images DIR --cache DIR --out FILE.npy``)."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

from benchmarks.evaluation.cache import DescriptorCache
from benchmarks.evaluation.extract import ExtractOptions
from methods.base import ExtractionProtocol

PROTOCOL = ExtractionProtocol(max_size=48, scales=(0.75, 1.0))
SIZES = ((40, 30), (30, 40), (64, 48), (48, 48))


class TinyEmbed(torch.nn.Module):
    """(B, 3, H, W) -> (B, 16) unit vectors: conv, ReLU, GeM-like mean pooling; ``sleep`` s per call (kill tests)."""

    def __init__(self, seed: int = 0, sleep: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.sleep = sleep

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.sleep:
            time.sleep(self.sleep)
        return F.normalize(F.relu(self.conv(images)).mean(dim=(2, 3)), dim=1)


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of the sizes in SIZES (smooth random colours), named in order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        paths.append(folder / f"{i:04d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def say(line: str) -> None:
    """``line`` and its newline in one write to stdout: the ranks of torchrun share the pipe, and a line written
    in two parts (print does, unbuffered) can be split by the other rank's."""
    os.write(1, (line + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chunk-rows", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    paths = sorted(args.images.glob("*.jpg"))
    cache = DescriptorCache(args.cache, {"n_images": len(paths), "dtype": "float32", "model": "tiny"}, args.chunk_rows)
    say("ready")
    extracted = cache.fill(TinyEmbed(sleep=args.sleep).eval(), paths, PROTOCOL, None,
                           ExtractOptions(batch_size=args.batch_size, num_workers=args.workers))
    rank = dist.get_rank() if dist.is_initialized() else 0
    np.save(args.out.with_suffix(f".rank{rank}.npy"), np.asarray(extracted.descriptors))
    say(json.dumps({"rank": rank, "written": cache.written}))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
