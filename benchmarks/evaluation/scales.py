"""The protocol's scales: each scale's input (resized from the batch, or read as a square), and how scales combine.

``resize`` "longest_side": a batch of read images is resized to each scale (:func:`resize_to_scale`).
"square": each scale is a square resized from the read image by PIL (:func:`square_scales`, on the loader's side,
as MSCFP's authors' ``torchvision.transforms.Resize((s, s), Image.ANTIALIAS)`` on the decoded image).
``scale_combination`` (:func:`embed_at_scales`): "average_descriptors" sums each scale's L2-normalised descriptor
and re-normalises; "sum_before_whitening" sums the descriptors before the method's whitening head
(``embed.aggregate``), L2-normalises, then applies the head (``embed.whiten``), as MSCFP's authors' code does.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from methods.base import ExtractionProtocol

Embed = Callable[[torch.Tensor], torch.Tensor]
KERNELS = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}
PAD_COLOUR = (255, 255, 255)  # MSCFP's authors' make_square fill_color


def square_sides(protocol: ExtractionProtocol, query: bool) -> list[int]:
    """The side of each scale's square: ``int(s * max_size)``, times ``query_scale`` for a query, evaluated as
    the authors' ``int(r * side_res * query_scaling)`` (float products left to right, then truncated)."""
    assert protocol.max_size is not None
    factor = protocol.query_scale if query else 1.0  # x 1.0 leaves a float as it is
    return [max(1, int(scale * protocol.max_size * factor)) for scale in protocol.scales]


def pad_to_square(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` pasted on a white square of side max(min_side, width, height), at ``int((side - w) / 2)``,
    ``int((side - h) / 2)``: MSCFP's authors' ``make_square`` for cropped queries."""
    width, height = image.size
    side = max(min_side, width, height)
    square = Image.new("RGB", (side, side), PAD_COLOUR)
    square.paste(image, (int((side - width) / 2), int((side - height) / 2)))
    return square


def square_scales(image: Image.Image, protocol: ExtractionProtocol, query: bool) -> list[np.ndarray]:
    """(side, side, 3) uint8 pixels at each scale of a ``resize="square"`` protocol, from the read RGB image
    (a query already cropped: padded first when ``query_pad`` is set)."""
    if query and protocol.query_pad is not None:
        image = pad_to_square(image, protocol.query_pad)
    kernel = KERNELS[protocol.resize_kernel]
    return [np.asarray(image.resize((side, side), kernel)) for side in square_sides(protocol, query)]


def resize_to_scale(images: torch.Tensor, scale: float, protocol: ExtractionProtocol) -> torch.Tensor:
    """(B, C, H, W) at ``scale`` as the protocol resizes. ``torch``: ``F.interpolate`` by the scale factor (floored
    sizes, coordinates mapped by 1/s, antialiased when shrinking); ``opencv``: bilinear to ``int(round(h * s)) x
    int(round(w * s))``, coordinates mapped by the size ratio, no antialiasing: ``cv2.resize(..., INTER_LINEAR)``
    on float images (tests/data/cv2_resize_reference.npz)."""
    if scale == 1.0:
        return images
    if protocol.scale_resize == "opencv":
        height, width = images.shape[-2:]
        size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False, antialias=scale < 1)


def _scaled(images: torch.Tensor | Sequence[torch.Tensor], protocol: ExtractionProtocol) -> list[torch.Tensor]:
    """Each scale's (B, 3, h, w) input: given (a sequence, one per scale, from :func:`square_scales`) or resized."""
    if isinstance(images, torch.Tensor):
        return [resize_to_scale(images, scale, protocol) for scale in protocol.scales]
    if len(images) != len(protocol.scales):
        raise ValueError(f"{len(images)} inputs for the protocol's {len(protocol.scales)} scales")
    return list(images)


def embed_at_scales(embed: Embed, images: torch.Tensor | Sequence[torch.Tensor],
                    protocol: ExtractionProtocol) -> torch.Tensor:
    """(B, 3, H, W), or one such tensor per scale -> (B, D) combined as ``protocol.scale_combination`` says.

    "sum_before_whitening" needs ``embed.aggregate`` and ``embed.whiten`` (a VLAD method's descriptor before its
    whitening, and the whitening with its L2); a plain function is its own descriptor with no head."""
    scaled = _scaled(images, protocol)
    if tuple(protocol.scales) == (1.0,) and protocol.scale_combination == "average_descriptors":
        return embed(scaled[0])
    head = getattr(embed, "whiten", None) if protocol.scale_combination == "sum_before_whitening" else None
    total = None
    for x in scaled:
        if protocol.scale_combination == "sum_before_whitening":
            out = embed.aggregate(x) if head is not None else embed(x)  # type: ignore[attr-defined]
        else:
            out = F.normalize(embed(x), dim=1)
        total = out if total is None else total + out
    assert total is not None
    total = F.normalize(total, dim=1)
    return total if head is None else head(total)
