"""The R-MAC region grid: counts, overlap closest to 40%, coverage and square sides for several aspect ratios,
the paper's region counts, tiny maps, and region max-pooling against a hand-computed case."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.layers.regions import long_side_regions, region_max_pool, rmac_regions


def _level_regions(regions: np.ndarray, levels: int, m: int) -> list[np.ndarray]:
    counts = [level * (level + m - 1) for level in range(1, levels + 1)]
    return np.split(regions, np.cumsum(counts)[:-1])


def _covered(regions: np.ndarray, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for top, left, side in regions:
        mask[top:top + side, left:left + side] = True
    return mask


@pytest.mark.parametrize(("height", "width", "m"), [(24, 24, 1), (24, 32, 2), (32, 24, 2), (24, 48, 3),
                                                    (30, 40, 2), (10, 40, 6)])
def test_grid_counts_sides_overlap_and_coverage(height, width, m):
    levels = 4
    assert long_side_regions(max(height, width), min(height, width)) == m
    regions = rmac_regions(height, width, levels)
    assert len(regions) == sum(level * (level + m - 1) for level in range(1, levels + 1))
    tops, lefts, sides = regions.T
    assert (tops >= 0).all() and (lefts >= 0).all()
    assert (tops + sides <= height).all() and (lefts + sides <= width).all()
    short, long = min(height, width), max(height, width)
    for level, members in enumerate(_level_regions(regions, levels, m), start=1):
        assert (members[:, 2] == int(2 * short / (level + 1))).all()  # squares of side 2 min(W, H) / (l + 1)
        # Finer levels span (l + m - 1) 2 min(W, H) / (l + 1), at most 2 min(W, H), along the long side: maps
        # longer than 2:1 (here 4:1 from level 4) are not covered there, as in Tolias et al.'s grid.
        side = int(2 * short / (level + 1))
        spans = (level + m - 1) * side >= long and level * side >= short
        assert spans == (level == 1 or long <= 2 * short or level < 4)
        assert _covered(members, height, width).all() == spans, f"level {level}"
        along = np.unique(members[:, 1] if width >= height else members[:, 0])
        assert len(along) == level + m - 1
    if m > 1:  # level 1: the chosen m overlaps closest to 40% among its neighbours m - 1 and m + 1
        def overlap(k: int) -> float:
            return 1 - (long / short - 1) / (k - 1)
        assert all(abs(overlap(m) - 0.4) <= abs(overlap(k) - 0.4) for k in (m - 1, m + 1) if k >= 2)


def test_the_papers_region_counts_on_a_1024x768_input():
    # Table I: S = 2, 3, 4, 5 scales give r = 8, 20, 40, 70 regions (32 x 24 map of a stride-32 network).
    assert [len(rmac_regions(24, 32, levels)) for levels in (2, 3, 4, 5)] == [8, 20, 40, 70]


def test_level_one_of_a_4_by_3_map_is_two_squares_at_the_two_ends():
    np.testing.assert_array_equal(rmac_regions(24, 32, 1), [[0, 0, 24], [0, 8, 24]])  # overlap 16/24: m = 2


def test_portrait_grid_is_the_transposed_landscape_grid_in_the_same_order():
    landscape, portrait = rmac_regions(24, 32, 4), rmac_regions(32, 24, 4)
    np.testing.assert_array_equal(portrait, landscape[:, [1, 0, 2]])


def test_a_fixed_long_side_count_gives_the_same_regions_on_every_map():
    for height, width in [(24, 24), (3, 4), (4, 3), (6, 12), (1, 1), (1, 5)]:
        regions = rmac_regions(height, width, 4, long_side_count=2)
        assert len(regions) == 40
        assert (regions[:, 2] >= 1).all()
        assert (regions[:, 0] + regions[:, 2] <= height).all() and (regions[:, 1] + regions[:, 2] <= width).all()
    # on a square map the two level-1 squares coincide; on a 2:1 map they tile it without overlap
    np.testing.assert_array_equal(rmac_regions(8, 8, 1, long_side_count=2), [[0, 0, 8], [0, 0, 8]])
    np.testing.assert_array_equal(rmac_regions(8, 16, 1, long_side_count=2), [[0, 0, 8], [0, 8, 8]])


def test_tiny_maps_give_one_cell_regions_inside_the_map():
    np.testing.assert_array_equal(rmac_regions(1, 1, 3), np.tile([0, 0, 1], (1 + 4 + 9, 1)))
    regions = rmac_regions(2, 3, 2)  # m = 2: 2 + 6 regions; level 2 squares of side floor(4 / 3) = 1
    assert len(regions) == 8 and regions[2:, 2].tolist() == [1] * 6
    assert _covered(regions[2:], 2, 3).all()


def test_bad_grids_are_refused():
    with pytest.raises(ValueError):
        rmac_regions(0, 4, 2)
    with pytest.raises(ValueError):
        rmac_regions(4, 4, 0)
    with pytest.raises(ValueError):
        long_side_regions(3, 4)


def test_region_max_pool_takes_each_regions_maximum():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    features[1, 2, 0, 0] = 1000.0
    regions = np.array([[0, 0, 2], [2, 3, 2], [0, 0, 4]])
    pooled = region_max_pool(features, regions)
    assert pooled.shape == (2, 3, 3)
    # channel c of image b is b * 60 + c * 20 + 5 y + x: the maximum sits at the region's bottom-right cell
    expected = torch.tensor([[[b * 60 + c * 20 + 5 * 1 + 1, b * 60 + c * 20 + 5 * 3 + 4, b * 60 + c * 20 + 5 * 3 + 3]
                              for c in range(3)] for b in range(2)], dtype=torch.float32).transpose(1, 2)
    expected[1, 0, 2] = expected[1, 2, 2] = 1000.0
    torch.testing.assert_close(pooled, expected)
