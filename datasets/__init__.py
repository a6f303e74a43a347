"""Dataset plugins. Each module registers its :class:`datasets.base.DatasetSpec` in ``DATASETS``.

Modules of this package other than the shared ones below are plugins, imported by :func:`load_plugins`.
This top-level package shadows Hugging Face's ``datasets``: the suite runs from the repository root.
"""
from __future__ import annotations

from benchmarks.errors import InputError
from benchmarks.registry import Registry, import_plugins
from datasets.base import DatasetSpec

DATASETS: Registry[type[DatasetSpec]] = Registry("dataset")

SHARED_MODULES = frozenset({"base", "formats", "acquire", "places", "synthetic_scenes", "photo_views", "folder"})


def load_plugins() -> Registry[type[DatasetSpec]]:
    """Import every plugin module (each registers itself) and return the registry."""
    import_plugins(__name__, __path__, SHARED_MODULES)
    return DATASETS


def dataset(name: str) -> DatasetSpec:
    """The dataset ``name`` names: a registered plugin, or a folder of one's own, ``revisited:PATH`` or
    ``places:PATH`` (:mod:`datasets.folder`)."""
    fmt, colon, path = name.partition(":")
    if colon:
        from datasets.folder import folder_dataset

        return folder_dataset(fmt, path)
    try:
        return load_plugins().get(name)()
    except InputError as error:
        raise InputError(f"{error.message}; a folder of your own: revisited:PATH or places:PATH") from None
