"""Test-time protocol details a method declares (methods.base.ExtractionProtocol): OpenCV's per-scale resize and
the truncated query crop of DOLG's official evaluation, against references and hand-computed cases."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.evaluation.extract import output_sizes, read_pixels
from benchmarks.evaluation.scales import embed_at_scales, pad_to_square, resize_to_scale, square_sides
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
    with pytest.raises(ValueError, match="scale_resize must be torch or opencv"):
        ExtractionProtocol(scale_resize="pil")


def test_square_sides_are_the_authors_int_of_the_products() -> None:
    protocol = ExtractionProtocol(max_size=336, scales=(1.5, 1.0, 2 / 3), resize="square", query_scale=0.7)
    assert square_sides(protocol, query=False) == [504, 336, 224]  # the paper's "224 + 336 + 504"
    assert square_sides(protocol, query=True) == [352, 235, 156]   # int(504 * 0.7) = int(352.8), ...
    assert square_sides(dataclasses.replace(protocol, max_size=512), query=True) == [537, 358, 238]


def test_query_pad_is_white_and_centred_by_truncation() -> None:
    image = Image.new("RGB", (5, 300), (10, 20, 30))
    padded = np.asarray(pad_to_square(image, 256))
    assert padded.shape == (300, 300, 3)
    columns = np.flatnonzero((padded[0] == (10, 20, 30)).all(axis=1))
    assert (columns[0], columns[-1]) == (147, 151)  # int((300 - 5) / 2) = 147
    assert (padded[:, 0] == 255).all() and (padded[:, -1] == 255).all()
    assert np.asarray(pad_to_square(Image.new("RGB", (10, 20)), 256)).shape == (256, 256, 3)


class _Head(torch.nn.Module):
    """aggregate: x -> mean colour (unit norm); whiten: a fixed linear map, then L2."""

    def aggregate(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.mean(dim=(2, 3)), dim=1)

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x @ torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, -1.0]]), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.whiten(self.aggregate(images))


def test_sum_before_whitening_whitens_the_normalised_sum() -> None:
    model = _Head()
    scales = [torch.rand(2, 3, 4, 4), torch.rand(2, 3, 6, 6)]
    total = torch.nn.functional.normalize(model.aggregate(scales[0]) + model.aggregate(scales[1]), dim=1)
    before = ExtractionProtocol(max_size=6, scales=(1.0, 1.5), resize="square",
                                scale_combination="sum_before_whitening")
    torch.testing.assert_close(embed_at_scales(model, scales, before), model.whiten(total))
    averaged = torch.nn.functional.normalize(model(scales[0]) + model(scales[1]), dim=1)
    torch.testing.assert_close(embed_at_scales(model, scales, dataclasses.replace(
        before, scale_combination="average_descriptors")), averaged)
    assert not torch.allclose(averaged, model.whiten(total))


@pytest.mark.parametrize("fields, message", [
    ({"scale_combination": "sum"}, "scale_combination must be average_descriptors or sum_before_whitening"),
    ({"resize": "square", "max_size": None}, "needs max_size"),
    ({"query_scale": 0.7}, "apply to resize 'square' only")])
def test_bad_protocol_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExtractionProtocol(**fields)


def test_a_trained_protocol_change_is_kept_in_the_checkpoint(tmp_path: Path) -> None:
    from methods.base import protocol_with
    from methods.mscfp import MSCFPConfig, MSCFPMethod
    from methods.weights import load_checkpoint, save_checkpoint

    model = MSCFPMethod(MSCFPConfig(backbone="resnet18", subvector_dim=128, num_clusters=4, whiten_dim=None))
    model.protocol = protocol_with(model.protocol, ["max_size=128", "query_pad=96", "scales=1.5,1,0.5"])
    save_checkpoint(tmp_path / "m.pt", model, "resnet18.demo", {})
    loaded = load_checkpoint(MSCFPMethod, tmp_path / "m.pt").model.protocol
    assert loaded == dataclasses.replace(MSCFPMethod.protocol, max_size=128, query_pad=96, scales=(1.5, 1.0, 0.5))
    with pytest.raises(ValueError, match="max_size"):
        protocol_with(model.protocol, ["max_size=big"])
