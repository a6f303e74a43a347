"""Dataset plugins. Each module registers its :class:`datasets.base.DatasetSpec` in ``DATASETS``.

Every module of this package is imported by :func:`load_plugins`; a plugin module registers itself on import,
shared ones (the contract, layers, formats) register nothing.
This top-level package shadows Hugging Face's ``datasets``: the suite runs from the repository root.
"""
from __future__ import annotations

from benchmarks.core.registry import Registry, import_plugins
from datasets.base import DatasetSpec

DATASETS: Registry[type[DatasetSpec]] = Registry("dataset")


def load_plugins() -> Registry[type[DatasetSpec]]:
    """Import every plugin module (each registers itself) and return the registry."""
    import_plugins(__name__, __path__)
    return DATASETS
