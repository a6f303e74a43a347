"""A generated distractor set in the R1M layout, for the scale benchmark (:mod:`benchmarks.speed.scale`).

``<root>/revisitop1m/revisitop1m.txt`` lists the images, relative to ``<root>/revisitop1m/jpg/``, in database
order, as the real list does; the images are ``jpg/<folder>/<subfolder>/<name>.jpg``: one folder per archive of
the real set (100 of them, images dealt round-robin so every size fills them evenly) and sub-folders of at most
1000 files, so no directory grows with N. :class:`datasets.revisitop.Revisitop1M` loads it unchanged.

Images are 64 pixels on the long side, landscape or portrait at 4:3, 16:10 or square (the pipeline batches
images of equal size only; as in the real set, most share a few shapes): smooth colour fields from a 4 x 4 random
grid, bilinear, JPEG quality 85;
image ``i`` is made from the seed and ``i`` alone, so the set is the same bytes whatever N and whatever was made
before. Generation resumes per sub-folder (each is written under a temporary name and renamed), and the list is
written last, atomically: a set with its list is complete.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.core.atomic import atomic_write_text

log = logging.getLogger(__name__)

FOLDERS = 100          # the real set's archives
PER_SUBFOLDER = 1000
SIZES = ((64, 48), (48, 64), (64, 40), (40, 64), (64, 64))  # (width, height): 4:3, 16:10 and square
LIST_NAME = "revisitop1m.txt"


def image_name(i: int) -> str:
    """Image ``i``'s path relative to ``jpg/``."""
    folder, k = i % FOLDERS, i // FOLDERS
    return f"{folder:03d}/{k // PER_SUBFOLDER:04d}/{i:08x}.jpg"


def distractor_image(i: int, seed: int = 0) -> Image.Image:
    """Image ``i``: one of :data:`SIZES`, a bilinear upsampling of a 4 x 4 grid of random colours."""
    rng = np.random.default_rng((seed, i))
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    grid = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR)


def _write_subfolder(jpg: Path, folder: int, sub: int, n: int, seed: int) -> None:
    """Images of ``jpg/<folder>/<sub>`` among the first ``n``, written under a temporary name then renamed."""
    target = jpg / f"{folder:03d}" / f"{sub:04d}"
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    first = (sub * PER_SUBFOLDER) * FOLDERS + folder
    for i in range(first, min(n, first + PER_SUBFOLDER * FOLDERS), FOLDERS):
        distractor_image(i, seed).save(partial / f"{i:08x}.jpg", quality=85)
    os.replace(partial, target)


def generate_distractors(root: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` distractors under ``<root>/revisitop1m`` (resuming an interrupted run); its folder.

    A sub-folder made for a smaller N is incomplete for a larger one; it is recognised by its file count and
    made again."""
    folder = Path(root) / "revisitop1m"
    listing = folder / LIST_NAME
    if listing.exists() and sum(1 for _ in listing.open()) == n:
        return folder
    listing.unlink(missing_ok=True)
    jpg = folder / "jpg"
    for f in range(min(n, FOLDERS)):
        in_folder = len(range(f, n, FOLDERS))
        for sub in range(-(-in_folder // PER_SUBFOLDER)):
            expected = min(PER_SUBFOLDER, in_folder - sub * PER_SUBFOLDER)
            target = jpg / f"{f:03d}" / f"{sub:04d}"
            if target.is_dir() and sum(1 for _ in os.scandir(target)) == expected:
                continue
            shutil.rmtree(target, ignore_errors=True)
            _write_subfolder(jpg, f, sub, n, seed)
        log.info("distractors: folder %d of %d written", f + 1, min(n, FOLDERS))
    atomic_write_text(listing, "".join(f"{image_name(i)}\n" for i in range(n)))
    return folder
