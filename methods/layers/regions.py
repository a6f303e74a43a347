"""The R-MAC region grid (Tolias, Sicre, Jegou, "Particular object retrieval with integral max-pooling of CNN
activations", ICLR 2016, Sec. 3) and max-pooling of a feature map over its regions.

On a W x H map, level l = 1..L holds square regions of side 2 min(W, H) / (l + 1), l of them along the short
side and l + m - 1 along the long side, spread uniformly from one border to the other. m, the number along the
long side at level 1 (regions of side min(W, H)), is chosen so that consecutive regions overlap by as close to
40% as possible (m = 1 on a square map). Regions are listed level by level, then along the short side, then
along the long side, so region i is the same relative region of a landscape map and of its transpose.
"""
from __future__ import annotations

import math

import numpy as np
import torch

R_MAC_OVERLAP = 0.4


def long_side_regions(long: float, short: float, overlap: float = R_MAC_OVERLAP) -> int:
    """m: how many level-1 squares (side ``short``) span ``long`` with neighbours overlapping closest to ``overlap``.

    m squares spanning the long side are ``(long - short) / (m - 1)`` apart, so they overlap by the fraction
    ``1 - (long / short - 1) / (m - 1)`` of their side; the smallest m wins a tie.
    """
    if short <= 0 or long < short:
        raise ValueError(f"need 0 < short <= long, got long {long}, short {short}")
    excess = long / short - 1
    if excess == 0:
        return 1
    candidates = range(2, math.ceil(excess / (1 - overlap)) + 3)  # the overlap grows with m: the best is below
    return min(candidates, key=lambda m: abs(1 - excess / (m - 1) - overlap))


def rmac_regions(height: int, width: int, levels: int, long_side_count: int | None = None) -> np.ndarray:
    """(R, 3) int64 regions ``(top, left, side)`` of an ``height`` x ``width`` map, R = sum_l l (l + m - 1).

    ``long_side_count`` fixes m (the grid of another aspect ratio, stretched to this map) so that every map
    has the same R; None chooses it for this map. Sides are floored to whole cells, at least one.
    """
    if height < 1 or width < 1 or levels < 1:
        raise ValueError(f"need a non-empty map and at least one level, got {height} x {width}, {levels} levels")
    long, short = max(height, width), min(height, width)
    m = long_side_regions(long, short) if long_side_count is None else long_side_count
    if m < 1:
        raise ValueError(f"long_side_count must be at least 1, got {m}")
    regions = []
    for level in range(1, levels + 1):
        side = max(1, math.floor(2 * short / (level + 1)))
        for across in _starts(short, side, level):
            for along in _starts(long, side, level + m - 1):
                top, left = (across, along) if width >= height else (along, across)
                regions.append((top, left, side))
    return np.asarray(regions, dtype=np.int64)


def _starts(length: int, side: int, count: int) -> list[int]:
    """``count`` offsets of a ``side``-long window spread uniformly over ``length``: first at 0, last at the end
    (a single window is centred)."""
    if count == 1:
        return [round((length - side) / 2)]
    return [round(k * (length - side) / (count - 1)) for k in range(count)]


def region_max_pool(features: torch.Tensor, regions: np.ndarray) -> torch.Tensor:
    """(B, C, H, W) features, (R, 3) regions ``(top, left, side)`` -> (B, R, C) per-region spatial maxima."""
    return torch.stack([features[:, :, top:top + side, left:left + side].amax(dim=(2, 3))
                        for top, left, side in regions.tolist()], dim=1)
