"""MSCFP column pooling: stride-1 max-pooled columns (hand-computed) and sub-vector splitting."""
from __future__ import annotations

import pytest
import torch

from methods.layers.column_pooling import split_columns, stride1_max_pool_columns

MAP = [[1.0, 5.0, 2.0, 0.0],
       [3.0, 4.0, 6.0, 1.0],
       [7.0, 0.0, 2.0, 8.0]]
# 2x2 windows, row-major: max(1,5,3,4)=5 max(5,2,4,6)=6 max(2,0,6,1)=6 / max(3,4,7,0)=7 max(4,6,0,2)=6 max(6,1,2,8)=8
MAX_2X2 = [5.0, 6.0, 6.0, 7.0, 6.0, 8.0]
# 3x3 windows: columns 0-2 -> 7, columns 1-3 -> 8
MAX_3X3 = [7.0, 8.0]
# the same windows' minima, for a second channel 10 - MAP (whose max is 10 - min)
MIN_2X2 = [1.0, 2.0, 0.0, 0.0, 0.0, 1.0]
MIN_3X3 = [0.0, 0.0]


def hand_map() -> torch.Tensor:
    channel = torch.tensor(MAP)
    return torch.stack([channel, 10 - channel])[None]  # (1, 2, 3, 4)


def test_hand_computed_2x2_and_3x3_columns() -> None:
    out = stride1_max_pool_columns(hand_map(), (2, 3))
    expected = torch.tensor([[MAX_2X2 + MAX_3X3, [10 - v for v in MIN_2X2 + MIN_3X3]]])
    assert out.shape == (1, 2, 6 + 2)
    assert torch.equal(out, expected)


def test_single_window_and_window_order() -> None:
    features = hand_map()
    assert torch.equal(stride1_max_pool_columns(features, (2,))[0, 0], torch.tensor(MAX_2X2))
    assert torch.equal(stride1_max_pool_columns(features, (3,))[0, 0], torch.tensor(MAX_3X3))
    assert torch.equal(stride1_max_pool_columns(features, (3, 2))[0, 0], torch.tensor(MAX_3X3 + MAX_2X2))
    assert torch.equal(stride1_max_pool_columns(features, (1,))[0], features[0].flatten(1))  # 1x1: the map itself


def loop_columns(features: torch.Tensor, windows: tuple[int, ...]) -> torch.Tensor:
    """Independent: explicit windows, row-major positions, the windows' columns concatenated."""
    batch, channels, height, width = features.shape
    columns = []
    for w in windows:
        for r in range(height - w + 1):
            for c in range(width - w + 1):
                columns.append(features[:, :, r:r + w, c:c + w].amax(dim=(2, 3)))
    return torch.stack(columns, dim=2)


@pytest.mark.parametrize(("height", "width", "windows"), [(5, 7, (2, 3)), (4, 4, (1, 2, 3, 4)), (6, 3, (3,))])
def test_column_count_and_values_on_random_maps(height: int, width: int, windows: tuple[int, ...]) -> None:
    features = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    out = stride1_max_pool_columns(features, windows)
    n = sum((height - w + 1) * (width - w + 1) for w in windows)
    assert out.shape == (2, 3, n)
    assert torch.equal(out, loop_columns(features, windows))


def test_window_larger_than_map_is_clipped() -> None:
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 9.0], [0.0, -5.0]]]])  # (1, 2, 2, 2)
    assert torch.equal(stride1_max_pool_columns(features, (3,)), torch.tensor([[[4.0], [9.0]]]))
    # 2x2 fits once, 3x3 is clipped to 2x2: N = 1 + 1
    assert torch.equal(stride1_max_pool_columns(features, (2, 3)), torch.tensor([[[4.0, 4.0], [9.0, 9.0]]]))


def test_window_clipped_on_one_side_only() -> None:
    """A 2x4 map and a 3x3 window: clipped to 2x3, one row of two columns."""
    features = torch.tensor([[[[1.0, 0.0, 2.0, 9.0], [0.0, 3.0, 0.0, 0.0]]]])
    assert torch.equal(stride1_max_pool_columns(features, (3,)), torch.tensor([[[3.0, 9.0]]]))


def test_split_columns_hand_written() -> None:
    columns = torch.tensor([[[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0],
                             [4.0, 14.0], [5.0, 15.0], [6.0, 16.0], [7.0, 17.0]]])  # (1, 8, 2): columns 0..7, 10..17
    out = split_columns(columns, 4)
    assert out.shape == (1, 4, 4)
    sub_vectors = sorted(tuple(out[0, :, m].tolist()) for m in range(4))
    assert sub_vectors == [(0.0, 1.0, 2.0, 3.0), (4.0, 5.0, 6.0, 7.0),
                           (10.0, 11.0, 12.0, 13.0), (14.0, 15.0, 16.0, 17.0)]
    # the current layout: sub-vector index major, then column
    expected = torch.tensor([[0.0, 10.0, 4.0, 14.0],
                             [1.0, 11.0, 5.0, 15.0],
                             [2.0, 12.0, 6.0, 16.0],
                             [3.0, 13.0, 7.0, 17.0]])
    assert torch.equal(out[0], expected)


def test_split_columns_batch_and_whole_column() -> None:
    columns = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(split_columns(columns, 6), columns)  # part = C: nothing to split
    out = split_columns(columns, 2)
    assert out.shape == (3, 2, 15)
    for b in range(3):  # each image's sub-vectors are its own
        assert torch.equal(out[b], split_columns(columns[b:b + 1], 2)[0])
        expected = sorted(tuple(columns[b, 2 * j:2 * j + 2, n].tolist()) for j in range(3) for n in range(5))
        assert sorted(tuple(out[b, :, m].tolist()) for m in range(15)) == expected


def test_split_columns_needs_a_divisor() -> None:
    with pytest.raises(ValueError, match="6 channels"):
        split_columns(torch.zeros(1, 6, 2), 4)
