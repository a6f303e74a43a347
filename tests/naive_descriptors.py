"""Naive descriptors, to show that the embedded benchmarks are neither trivial nor impossible: what a benchmark
gives to colour alone is the floor a learned method must clear."""
from __future__ import annotations

import numpy as np
from PIL import Image


def colour_histogram(img: Image.Image) -> np.ndarray:
    """4 x 4 x 4 RGB histogram, square-rooted (Hellinger) and L2-normalised: (64,)."""
    levels = np.asarray(img.convert("RGB")).reshape(-1, 3) // 64
    counts = np.bincount(levels @ np.array([16, 4, 1]), minlength=64).astype(np.float64)
    return np.sqrt(counts) / np.linalg.norm(np.sqrt(counts))


def colour_thumbnail(img: Image.Image) -> np.ndarray:
    """8 x 8 colour thumbnail, each channel standardised (cancels colour casts), L2-normalised: (192,)."""
    x = np.asarray(img.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float64)
    x = ((x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-6)).ravel()
    return x / np.linalg.norm(x)
