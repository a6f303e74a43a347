"""Descriptor extraction: images -> (N, D) float32, batched by image size, the same for every method.

Each image is read (RGB), cropped to its query box where the protocol says so, downscaled to the protocol's
``max_size`` (never enlarged; PIL bilinear, ``reducing_gap=None``) or resized to one square per scale
(``resize="square"``), and normalised with the model's mean/std; the scales are made and their descriptors
combined as :mod:`benchmarks.evaluation.scales` says.

The pipeline: a DataLoader whose workers read image headers, then decode, crop and resize to 8-bit pixels; a
batch sampler that groups images of exactly the same output size (no padding and no extra resizing, so a
batch gives each image the descriptor it has alone, up to the float rounding of batched convolutions). The
uint8 batch (a quarter of float32's bytes: pinned memory and transfers on CUDA) is normalised on the device,
in the float32 operations of the formula, so to the same bits; model and batch are channels_last (oneDNN's
and cuDNN's fast layout; the model is put back as it was afterwards), with bfloat16 autocast on CUDA only (on
CPU the arithmetic is fp32, as in :func:`extract_one_by_one`, the straightforward loop kept as the reference).
The main process only moves batches to the device, runs the model and stores rows: no per-image Python there.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from benchmarks.core.errors import InputError
from benchmarks.evaluation.scales import KERNELS, Embed, embed_at_scales, square_scales, square_sides
from benchmarks.evaluation.stage_times import stage
from datasets.base import crop_query, query_box
from methods.base import ExtractionProtocol

log = logging.getLogger(__name__)

BAD_IMAGE_CHOICES = ("fail", "skip")
HEADER_WORKERS_FROM = 4096  # images; fewer headers are read in the main process (see output_sizes)
Pixels = torch.Tensor | list[torch.Tensor]  # one batch, or one per scale (resize="square")
SKIP_HINT = "rerun with --on-bad-image skip to leave such images out (recorded in the result)"


EXIF_ORIENTATION = 0x0112
TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def target_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(width, height) after downscaling so the longest side is at most ``max_size`` (rounded, aspect kept)."""
    longest = max(size)
    if max_size is None or longest <= max_size:
        return size
    return max(1, round(size[0] * max_size / longest)), max(1, round(size[1] * max_size / longest))


# Pillow raises these on truncated, corrupt, unreadable or forged (decompression bomb) files
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def as_rgb(image: Image.Image, path: Path) -> Image.Image:
    """``image`` as 8-bit RGB. 16-bit greyscale keeps its top 8 bits (as OpenCV's ``imread`` reads it; Pillow's
    ``convert`` would clip it to white); alpha is dropped and palettes, CMYK and L are converted by Pillow, as
    the references read them; 32-bit integer and float pixels have no agreed 8-bit reading and are refused."""
    if image.mode.startswith("I;16"):
        wide = np.asarray(image, dtype=np.uint16)
        return Image.fromarray((wide >> 8).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        raise InputError(f"{image.mode!r} pixels (32-bit {'integer' if image.mode == 'I' else 'float'}) have no "
                         "8-bit reading; convert the image to 8-bit RGB", path)
    return image if image.mode == "RGB" else image.convert("RGB")


def _read_rgb(path: Path, protocol: ExtractionProtocol) -> Image.Image:
    """The decoded 8-bit RGB image (turned upright first where the protocol reads EXIF orientation)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return as_rgb(ImageOps.exif_transpose(opened) if protocol.exif_orientation else opened, path)
    except InputError:
        raise
    except UNREADABLE as error:
        raise InputError(f"cannot read image ({error})", path) from None


def read_scales(path: Path, protocol: ExtractionProtocol, box: Sequence[float] | None = None) -> list[np.ndarray]:
    """(H, W, 3) uint8 pixels of one image, cropped per ``protocol``: one array downscaled to ``max_size``
    (``resize="longest_side"``: the scales are made from it on the device), or one square per scale."""
    image = _read_rgb(path, protocol)
    if box is not None:
        try:
            image = crop_query(image, box, protocol.crop_rounding)
        except (ValueError, Image.DecompressionBombError) as error:  # empty once clamped, or absurdly large
            raise InputError(f"cannot crop to the query box {list(map(float, box))} ({error})", path) from None
    if protocol.resize == "square":
        return square_scales(image, protocol, box is not None)
    size = target_size(image.size, protocol.max_size)
    if size != image.size:
        image = image.resize(size, KERNELS[protocol.resize_kernel], reducing_gap=None)
    return [np.asarray(image)]


def read_pixels(path: Path, protocol: ExtractionProtocol, box: Sequence[float] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 pixels of one image at scale 1 (the first scale of a square protocol), not normalised."""
    scales = read_scales(path, protocol, box)
    return scales[protocol.scales.index(1.0)] if len(scales) > 1 and 1.0 in protocol.scales else scales[0]


def normalise(pixels: torch.Tensor, protocol: ExtractionProtocol) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 ``(v / 255 - mean[c]) / std[c]``, on ``pixels``' device.

    One float32 operation after another, as the formula reads, so the same bits on every device; a batch comes
    out channels_last (the channel axis is moved, not copied). The arithmetic runs on rows of W x 3 values
    against mean and std repeated W times: a contiguous inner loop, 4x faster than broadcasting over 3 channels."""
    width = pixels.shape[-2]
    mean = torch.tensor(protocol.mean, dtype=torch.float32, device=pixels.device).repeat(width)
    std = torch.tensor(protocol.std, dtype=torch.float32, device=pixels.device).repeat(width)
    rows = pixels.reshape(*pixels.shape[:-2], width * 3).float().div_(255.0).sub_(mean).div_(std)
    return rows.view(pixels.shape).movedim(-1, -3)


def load_image(path: Path, protocol: ExtractionProtocol, box: Sequence[float] | None = None) -> torch.Tensor:
    """(3, H, W) float32 contiguous tensor of one image, cropped, downscaled and normalised per ``protocol``."""
    return normalise(torch.tensor(read_pixels(path, protocol, box)), protocol).contiguous()


@contextlib.contextmanager
def channels_last(embed: Embed) -> Iterator[bool]:
    """Within the block a module's 4-D weights are channels_last, put back as they were after it; yields whether
    ``embed`` is such a module (a plain function keeps its layout)."""
    if not isinstance(embed, torch.nn.Module):
        yield False
        return
    changed = [t for t in (*embed.parameters(), *embed.buffers())
               if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last)]
    for tensor in changed:
        tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        for tensor in changed:
            tensor.data = tensor.data.contiguous()


def _output_size(path: Path, protocol: ExtractionProtocol, box: Sequence[float] | None) -> tuple[int, int]:
    """(width, height) the image will have after crop and downscale; (-1, -1) when its header is unreadable. A
    square protocol's images all have the same sizes (a file that cannot be read is found when it is read)."""
    if protocol.resize == "square":
        side = square_sides(protocol, box is not None)[0]
        return side, side
    if box is not None and protocol.crop_rounding == "round":  # no header read needed
        x1, y1, x2, y2 = query_box(box)
        return target_size((x2 - x1, y2 - y1), protocol.max_size)
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if protocol.exif_orientation and opened.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSING:
                width, height = height, width
    except UNREADABLE:
        return -1, -1
    if box is not None:
        x1, y1, x2, y2 = query_box(box, protocol.crop_rounding, (width, height))
        width, height = x2 - x1, y2 - y1
    return target_size((width, height), protocol.max_size)


class _Headers(Dataset):
    """Item i: the output size of image i (a header read), for :func:`output_sizes`' workers."""

    def __init__(self, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None) -> None:
        self.paths, self.protocol, self.boxes = paths, protocol, boxes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return _output_size(self.paths[i], self.protocol, None if self.boxes is None else self.boxes[i])


def output_sizes(paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None = None,
                 num_workers: int = 0) -> np.ndarray:
    """(N, 2) int64 (width, height) of each image after crop and downscale; -1 where the header is unreadable.

    A header read takes tens of microseconds and starting a worker about a tenth of a second: workers read
    the headers of large lists only."""
    if not paths:
        return np.empty((0, 2), dtype=np.int64)
    workers = num_workers if len(paths) >= HEADER_WORKERS_FROM else 0
    loader = DataLoader(_Headers(paths, protocol, boxes), batch_size=256, num_workers=workers,
                        collate_fn=_size_array)
    return np.concatenate(list(loader))


def _size_array(sizes: list[tuple[int, int]]) -> np.ndarray:
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def batches_by_size(sizes: np.ndarray, batch_size: int, indices: np.ndarray | None = None) -> list[list[int]]:
    """Indices (of ``indices``, default all) with equal ``sizes`` rows in batches, groups in first-seen order."""
    indices = np.arange(len(sizes)) if indices is None else np.asarray(indices)
    if not len(indices):
        return []
    _, first, group = np.unique(sizes[indices], axis=0, return_index=True, return_inverse=True)
    group = np.argsort(np.argsort(first))[group.reshape(-1)]  # renumber groups by first appearance
    ordered = indices[np.argsort(group, kind="stable")]
    bounds = np.flatnonzero(np.diff(np.sort(group))) + 1
    return [chunk.tolist() for members in np.split(ordered, bounds)
            for chunk in np.split(members, range(batch_size, len(members), batch_size))]


def size_batches(paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None,
                 batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of images that will have the same size, in first-seen order."""
    sizes = output_sizes(paths, protocol, boxes)
    unreadable = np.flatnonzero(sizes[:, 0] < 0)
    if len(unreadable):
        raise InputError(f"cannot read image header; {SKIP_HINT}", paths[unreadable[0]])
    return batches_by_size(sizes, batch_size)


def default_workers(device: str) -> int:
    """DataLoader workers. CUDA: every core but one (at most 8) decodes. CPU: the model's threads use every
    core, so a worker process only preempts them: on 2 cores the images are read in the main process (a
    128 x 96 JPEG takes under 1 ms against tens of ms of model; measured in README's Speed table), on more
    cores one worker reads ahead."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else 1


@dataclass(frozen=True)
class ExtractOptions:
    """How to run the pipeline. ``label`` names the model in error messages (``netvlad weights vgg16.x``)."""

    batch_size: int = 16
    device: str = "cpu"
    num_workers: int = -1               # -1: default_workers(device)
    on_bad_image: str = "fail"          # "fail": stop naming the image; "skip": a zero row, listed as skipped
    label: str = "the model"

    def __post_init__(self) -> None:
        if self.on_bad_image not in BAD_IMAGE_CHOICES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_CHOICES}, not {self.on_bad_image!r}")

    @property
    def workers(self) -> int:
        return default_workers(self.device) if self.num_workers < 0 else self.num_workers


@dataclass(frozen=True)
class Batch:
    """One processed batch: ``rows`` (b,) image indices with ``descriptors`` (b, D) float32, and the images
    that could not be read (skip mode) with the reason."""

    rows: np.ndarray
    descriptors: np.ndarray
    bad: tuple[tuple[int, str], ...]


class _Images(Dataset):
    """Item i: (i, [(H, W, 3) uint8 pixels, one array or one per scale], "") or (i, None, why it cannot be read)."""

    def __init__(self, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None) -> None:
        self.paths, self.protocol, self.boxes = paths, protocol, boxes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, list[np.ndarray] | None, str]:
        try:
            return i, read_scales(self.paths[i], self.protocol, None if self.boxes is None else self.boxes[i]), ""
        except InputError as error:
            return i, None, error.message


def _collate(items: list[tuple[int, list[np.ndarray] | None, str]]) -> tuple[torch.Tensor, Pixels, list]:
    """(rows, (B, H, W, 3) uint8 pixels or a list of them, one per scale, unreadable (index, why))."""
    good = [(i, pixels) for i, pixels, _ in items if pixels is not None]
    rows = torch.tensor([i for i, _ in good], dtype=torch.int64)
    scales = [torch.from_numpy(np.stack([pixels[s] for _, pixels in good])) for s in range(len(good[0][1]))] \
        if good else [torch.empty(0)]
    return rows, scales[0] if len(scales) == 1 else scales, [(i, why) for i, image, why in items if image is None]


def run_batches(embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None,
                batches: Iterable[list[int]], options: ExtractOptions, total: int | None = None) -> Iterator[Batch]:
    """Descriptors of ``batches`` (lists of indices of equal-size images), in the order they are given, with a
    progress bar of the ``total`` images on a terminal.

    Raises InputError naming the image when one cannot be read (``on_bad_image="fail"``) and naming the
    model and images when a descriptor holds NaN or infinite values.
    """
    device = torch.device(options.device)
    loader = DataLoader(_Images(paths, protocol, boxes), batch_sampler=batches, num_workers=options.workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    with channels_last(embed) as module, tqdm(total=total, desc=f"{options.label}: extracting", unit="img",
                                              disable=None, leave=False, dynamic_ncols=True) as bar:
        batches = iter(loader)
        while True:
            with stage("read and decode"):
                item = next(batches, None)
            if item is None:
                return
            rows, pixels, bad = item
            bar.update(len(rows) + len(bad))
            if bad and options.on_bad_image == "fail":
                raise InputError(f"cannot read image ({bad[0][1]}); {SKIP_HINT}", paths[bad[0][0]])
            with stage("model"):
                out = (embed_batch(embed, pixels, protocol, device, module) if len(rows)
                       else np.empty((0, 0), np.float32))
            _check_finite(out, rows.numpy(), paths, options.label)
            yield Batch(rows.numpy(), out, tuple(bad))


def embed_batch(embed: Embed, pixels: Pixels, protocol: ExtractionProtocol, device: torch.device,
                module: bool) -> np.ndarray:
    """(B, H, W, 3) uint8 on the CPU (pinned for CUDA), or a list of them, one per scale (``resize="square"``)
    -> (B, D) float32 numpy: moved to ``device``, normalised there, embedded at the protocol's scales. The batch
    is channels_last for a ``module`` (whose weights :func:`channels_last` has made so) and on CUDA, else
    contiguous; bfloat16 autocast on CUDA only."""
    cuda = device.type == "cuda"
    scales = [normalise(p.to(device, non_blocking=True), protocol)  # channels_last already
              for p in (pixels if isinstance(pixels, list) else [pixels])]
    if not (module or cuda):
        scales = [images.contiguous() for images in scales]
    images = scales[0] if isinstance(pixels, torch.Tensor) else scales
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        return embed_at_scales(embed, images, protocol).float().cpu().numpy()


def _check_finite(descriptors: np.ndarray, rows: np.ndarray, paths: Sequence[Path], label: str) -> None:
    finite = np.isfinite(descriptors).all(axis=1)
    if not finite.all():
        bad = [str(paths[i]) for i in rows[~finite]]
        raise InputError(f"{label} gave NaN or infinite descriptors for {len(bad)} image(s): {', '.join(bad[:5])}; "
                         "the weights or the image are broken (check the weights' sha256, re-download the image)")


@dataclass(frozen=True)
class Extracted:
    """(N, D) descriptors (float32, or a float16 memory map from the cache) and the indices of skipped images,
    whose rows are zeros."""

    descriptors: np.ndarray
    skipped: tuple[int, ...] = ()


def extract_all(embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None,
                options: ExtractOptions, progress: Callable[[int], None] | None = None) -> Extracted:
    """Every image of ``paths`` through the pipeline, in memory (no cache)."""
    if not paths:
        raise ValueError("no images to extract")
    sizes = output_sizes(paths, protocol, boxes, options.workers)
    unreadable = np.flatnonzero(sizes[:, 0] < 0)
    if len(unreadable) and options.on_bad_image == "fail":
        raise InputError(f"cannot read image header; {SKIP_HINT}", paths[unreadable[0]])
    out: np.ndarray | None = None
    skipped = [int(i) for i in unreadable]
    for batch in run_batches(embed, paths, protocol, boxes, batches_by_size(sizes, options.batch_size,
                                                                             np.flatnonzero(sizes[:, 0] >= 0)),
                             options, len(paths) - len(unreadable)):
        if len(batch.rows):
            if out is None:
                out = np.zeros((len(paths), batch.descriptors.shape[1]), dtype=np.float32)
            out[batch.rows] = batch.descriptors
        skipped += [i for i, _ in batch.bad]
        if progress is not None:
            progress(len(batch.rows) + len(batch.bad))
    if out is None:
        raise InputError(f"none of the {len(paths)} images could be read", paths[0])
    return Extracted(out, tuple(sorted(skipped)))


def extract(embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol, boxes: np.ndarray | None = None,
            batch_size: int = 16, device: torch.device | str = "cpu",
            progress: Callable[[int], None] | None = None, num_workers: int = -1) -> np.ndarray:
    """(N, D) float32 descriptors of ``paths`` in order; ``boxes`` (N, 4) crop each image first."""
    options = ExtractOptions(batch_size=batch_size, device=str(device), num_workers=num_workers)
    return extract_all(embed, paths, protocol, boxes, options, progress).descriptors


@torch.no_grad()
def extract_one_by_one(embed: Embed, paths: Sequence[Path], protocol: ExtractionProtocol,
                       boxes: np.ndarray | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """(N, D) float32: the straightforward loop (one image read and embedded at a time), the reference."""
    rows = []
    for i, path in enumerate(paths):
        scales = [normalise(torch.tensor(p), protocol).contiguous()[None].to(device)
                  for p in read_scales(path, protocol, None if boxes is None else boxes[i])]
        rows.append(embed_at_scales(embed, scales[0] if protocol.resize == "longest_side" else scales,
                                    protocol).float().cpu().numpy()[0])
    return np.stack(rows)
