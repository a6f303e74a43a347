"""The one place that imports timm, working around PyPI's CUDA-only torchvision next to a CPU torch.

timm imports torchvision. PyPI's torchvision 0.28.0 (the release matching torch 2.13.0) ships a C++
extension built against CUDA torch; next to the CPU torch it fails to load, which torchvision tolerates,
but ``torchvision/_meta_registrations.py`` then registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` without checking, and the import dies with "operator torchvision::nms does not
exist". Where that happens we declare the two operator schemas (no kernels) and import again: the
transforms and ``torchvision.ops.misc`` that timm uses work, and calling ``nms`` raises torchvision's own
"Couldn't load custom C++ ops" error (the suite never calls it). Where torchvision imports normally this
does nothing. Everything that needs timm calls :func:`import_timm`.
"""
from __future__ import annotations

import logging
import sys
from types import ModuleType

import torch

log = logging.getLogger(__name__)

_UNREGISTERED_OPS = ("nms", "qnms")
_schema_library: torch.library.Library | None = None  # kept alive: the schemas vanish with it


def _declare_missing_torchvision_ops() -> None:
    global _schema_library
    if _schema_library is None:
        _schema_library = torch.library.Library("torchvision", "FRAGMENT")
        for op in _UNREGISTERED_OPS:
            _schema_library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_torchvision() -> ModuleType:
    """``import torchvision``, declaring the ops its failed extension left undefined if needed."""
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::nms does not exist" not in str(error):
            raise
        log.debug("torchvision's C++ extension did not load (%s); declaring its nms schemas", error)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_missing_torchvision_ops()
        import torchvision
    return torchvision


def import_timm() -> ModuleType:
    """``import timm``, after :func:`import_torchvision`."""
    import_torchvision()
    import timm

    return timm
