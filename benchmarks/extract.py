"""Descriptor extraction: images -> (N, D) float32, batched by image size, the same for every method.

Each image is read (RGB), cropped to its query box where the protocol says so, downscaled to the protocol's
``max_size`` (never enlarged), and normalised with the model's mean/std. Images of the same size are
batched; at several scales each scale's descriptor is L2-normalised, they are summed and re-normalised.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.errors import InputError
from datasets.base import crop_query
from methods.base import ExtractionProtocol

log = logging.getLogger(__name__)

Embed = Callable[[torch.Tensor], torch.Tensor]


def target_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(width, height) after downscaling so the longest side is at most ``max_size`` (rounded, aspect kept)."""
    longest = max(size)
    if max_size is None or longest <= max_size:
        return size
    return max(1, round(size[0] * max_size / longest)), max(1, round(size[1] * max_size / longest))


def load_image(path: Path, protocol: ExtractionProtocol, box: Sequence[float] | None = None) -> torch.Tensor:
    """(3, H, W) float32 tensor of one image, cropped, downscaled and normalised per ``protocol``."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read image ({error})", path) from None
    if box is not None:
        image = crop_query(image, box)
    size = target_size(image.size, protocol.max_size)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(protocol.mean).view(3, 1, 1)
    std = torch.tensor(protocol.std).view(3, 1, 1)
    return (tensor - mean) / std


def _output_size(path: Path, protocol: ExtractionProtocol, box: Sequence[float] | None) -> tuple[int, int]:
    if box is not None:
        x1, y1, x2, y2 = (round(v) for v in box)
        size = (x2 - x1, y2 - y1)
    else:
        try:
            with Image.open(path) as opened:
                size = opened.size
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read image ({error})", path) from None
    return target_size(size, protocol.max_size)


def size_batches(paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None,
                 batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of images that will have the same size, in first-seen order."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        groups[_output_size(path, protocol, None if boxes is None else boxes[i])].append(i)
    return [members[s:s + batch_size] for members in groups.values() for s in range(0, len(members), batch_size)]


def embed_at_scales(embed: Embed, images: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, D): the sum of each scale's L2-normalised descriptor, re-normalised."""
    if tuple(scales) == (1.0,):
        return embed(images)
    total = None
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                           align_corners=False, antialias=scale < 1)
        out = F.normalize(embed(scaled), dim=1)
        total = out if total is None else total + out
    assert total is not None
    return F.normalize(total, dim=1)


@torch.no_grad()
def extract(embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None = None,
            batch_size: int = 16, device: torch.device | str = "cpu",
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, D) float32 descriptors of ``paths`` in order; ``boxes`` (N, 4) crop each image first."""
    out: np.ndarray | None = None
    for batch in size_batches(paths, protocol, boxes, batch_size):
        images = torch.stack([load_image(paths[i], protocol, None if boxes is None else boxes[i]) for i in batch])
        descriptors = embed_at_scales(embed, images.to(device), protocol.scales).float().cpu().numpy()
        if out is None:
            out = np.empty((len(paths), descriptors.shape[1]), dtype=np.float32)
        out[batch] = descriptors
        if progress is not None:
            progress(len(batch))
    if out is None:
        raise ValueError("no images to extract")
    return out
