"""Dataset plugins. Each module registers its :class:`datasets.base.DatasetSpec` in ``DATASETS``.

Modules of this package other than the shared ones below are plugins, imported by :func:`load_plugins`.
This top-level package shadows Hugging Face's ``datasets``: the suite runs from the repository root.
"""
from __future__ import annotations

from benchmarks.registry import Registry, import_plugins
from datasets.base import DatasetSpec

DATASETS: Registry[type[DatasetSpec]] = Registry("dataset")

SHARED_MODULES = frozenset({"base", "formats", "acquire", "places", "synthetic_scenes", "photo_views"})


def load_plugins() -> Registry[type[DatasetSpec]]:
    """Import every plugin module (each registers itself) and return the registry."""
    import_plugins(__name__, __path__, SHARED_MODULES)
    return DATASETS
