"""Method plugins. Each paper is one module here that registers its RetrievalMethod in ``METHODS``.

Modules of this package other than the shared ones below are plugins, imported by :func:`load_plugins`.
"""
from __future__ import annotations

from benchmarks.registry import Registry, import_plugins
from methods.base import RetrievalMethod

METHODS: Registry[type[RetrievalMethod]] = Registry("method")

SHARED_MODULES = frozenset({"base", "layers", "losses", "mining", "patchnetvlad_weights", "train",
                            "train_classification", "training", "weights"})


def load_plugins() -> Registry[type[RetrievalMethod]]:
    """Import every plugin module (each registers itself) and return the registry."""
    import_plugins(__name__, __path__, SHARED_MODULES)
    return METHODS
