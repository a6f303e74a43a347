"""Test-time protocol details a method declares (methods.base.ExtractionProtocol): OpenCV's per-scale resize and
the truncated query crop of DOLG's official evaluation, against references and hand-computed cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.evaluation.extract import output_sizes, read_pixels, resize_to_scale
from datasets.base import query_box
from methods.base import ExtractionProtocol
from methods.dolg import DOLGMethod

REFERENCE = Path(__file__).parent / "data" / "cv2_resize_reference.npz"
OPENCV = ExtractionProtocol(max_size=None, scale_resize="opencv", crop_rounding="truncate")


@pytest.mark.parametrize("scale", [0.3535, 0.5, 0.7071, 1.4142])
def test_opencv_resize_is_cv2_inter_linear(scale: float) -> None:
    reference = np.load(REFERENCE)
    image = torch.from_numpy(reference["image"]).permute(2, 0, 1)[None]
    ours = resize_to_scale(image, scale, OPENCV)[0].permute(1, 2, 0).numpy()
    expected = reference[f"scale_{scale}"]
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 2e-3  # measured 9e-4 on 0..255 values
    torch_way = resize_to_scale(image, scale, ExtractionProtocol(max_size=None))
    assert torch_way.shape[-2:] != ours.shape[:2] or not torch.allclose(torch_way[0].permute(1, 2, 0),
                                                                       torch.from_numpy(ours), atol=1)


def test_truncated_crop_is_int_then_slicing() -> None:
    box = (2.7, 3.5, 20.9, 40.0)
    assert query_box(box) == (3, 4, 21, 40)                              # rounded (halves to even), not clamped
    assert query_box(box, "truncate", (18, 30)) == (2, 3, 18, 30)        # int(), then clamped as slicing does
    with pytest.raises(ValueError, match="needs the image size"):
        query_box(box, "truncate")
    with pytest.raises(ValueError, match="crop rounding"):
        query_box(box, "floor")


def test_truncated_crop_reads_the_pixels_numpy_slicing_gives(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = tmp_path / "q.png"
    Image.fromarray(pixels).save(path)
    box = np.array([[2.7, 3.5, 20.9, 45.0]])
    assert np.array_equal(read_pixels(path, OPENCV, box[0]), pixels[3:30, 2:20])  # im[int(y1):y2, int(x1):x2]
    assert output_sizes([path], OPENCV, box).tolist() == [[18, 27]]
    assert output_sizes([path], ExtractionProtocol(max_size=None), box).tolist() == [[18, 41]]  # rounded, padded


def test_dolg_declares_its_official_protocol_and_unknown_values_are_refused() -> None:
    protocol = DOLGMethod.protocol
    assert (protocol.scale_resize, protocol.crop_rounding, protocol.exif_orientation) == ("opencv", "truncate", True)
    with pytest.raises(ValueError, match="scale_resize torch or opencv"):
        ExtractionProtocol(scale_resize="pil")
