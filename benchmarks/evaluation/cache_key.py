"""The descriptor cache's key: the sha256 of everything that changes a descriptor (see
:mod:`benchmarks.evaluation.cache`): method name and config, weights sha256, extraction protocol, the arithmetic,
the storage dtype, and the image manifest (names, content sha256s, crop boxes)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core.data_root import name_under
from benchmarks.core.errors import InputError
from benchmarks.core.file_digests import file_digests
from methods.base import ExtractionProtocol

FORMAT_VERSION = 2  # 2: images keyed by content, chunks checksummed
CACHE_DTYPES = ("float32", "float16")


def images_sha256(paths: Sequence[Path], boxes: np.ndarray | None, data_root: Path) -> str:
    """Digest of the ordered image list: names relative to ``data_root``, the sha256 of each file's contents
    ("missing" for a file that cannot be read: extraction then names it, or skips it under ``--on-bad-image
    skip``; remembered in ``<data_root>/cache/file-sha256.sqlite``), crop boxes."""
    digest = hashlib.sha256()
    contents = file_digests(paths, data_root / "cache" / "file-sha256.sqlite")
    for i, (path, content) in enumerate(zip(paths, contents, strict=True)):
        box = "" if boxes is None else ",".join(repr(float(v)) for v in boxes[i])
        digest.update(f"{name_under(path, data_root)}\t{content}\t{box}\n".encode())
    return digest.hexdigest()


def precision(device: str) -> str:
    """The arithmetic the pipeline uses on ``device`` (part of the key: it changes the numbers)."""
    return "bfloat16-autocast" if device.startswith("cuda") else "float32"


# Protocol fields added after caches of this format existed: in a key only when not at their default, so the
# caches of every method that keeps the default stay valid.
_LATER_PROTOCOL_FIELDS = ("exif_orientation", "crop_rounding", "scale_resize", "scale_combination", "resize",
                         "resize_kernel", "query_scale", "query_pad")


def _later_protocol_fields(protocol: ExtractionProtocol) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(ExtractionProtocol)}
    return {name: getattr(protocol, name) for name in _LATER_PROTOCOL_FIELDS
            if getattr(protocol, name) != defaults[name]}


def cache_key(method: str, config: dict[str, Any], weights_sha256: str, protocol: ExtractionProtocol,
              paths: Sequence[Path], boxes: np.ndarray | None, data_root: Path, device: str,
              dtype: str = "float32") -> dict[str, Any]:
    """The fields whose sha256 names a cache directory (see the module docstring), as JSON reads them back
    (tuples in a config become lists), so that a fresh key equals the one a directory records."""
    if dtype not in CACHE_DTYPES:
        raise InputError(f"cache dtype must be one of {CACHE_DTYPES}, not {dtype!r}")
    return _as_json({"format_version": FORMAT_VERSION, "method": method, "config": config,
            "weights_sha256": weights_sha256,
            "protocol": {"max_size": protocol.max_size, "scales": list(protocol.scales), "mean": list(protocol.mean),
                         "std": list(protocol.std), "cropped": boxes is not None, **_later_protocol_fields(protocol)},
            "precision": precision(device), "dtype": dtype, "n_images": len(paths),
            "images_sha256": images_sha256(paths, boxes, data_root)})


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, sort_keys=True))


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
