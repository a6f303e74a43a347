"""Dataset names as the command line takes them: a registered plugin, or a folder of one's own
(``revisited:PATH``, ``places:PATH``)."""
from __future__ import annotations

from benchmarks.core.errors import InputError
from datasets import load_plugins
from datasets.base import DatasetSpec
from datasets.folder import folder_dataset


def dataset(name: str) -> DatasetSpec:
    """The dataset ``name`` names: a registered plugin, or a folder of one's own, ``revisited:PATH`` or
    ``places:PATH`` (:mod:`datasets.folder`)."""
    fmt, colon, path = name.partition(":")
    if colon:
        return folder_dataset(fmt, path)
    try:
        return load_plugins().get(name)()
    except InputError as error:
        raise InputError(f"{error.message}; a folder of your own: revisited:PATH or places:PATH") from None
