"""Dataset plugins. Each module registers its :class:`datasets.base.DatasetSpec` in ``DATASETS``.

This top-level package shadows Hugging Face's ``datasets``: the suite runs from the repository root.
"""
from benchmarks.registry import Registry
from datasets.base import DatasetSpec

DATASETS: Registry[type[DatasetSpec]] = Registry("dataset")
