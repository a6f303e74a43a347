"""Method plugins. Each paper is one module here that registers its RetrievalMethod in ``METHODS``.

Modules of this package other than the shared ones below are plugins, imported by :func:`load_plugins`.
"""
from __future__ import annotations

import importlib
import pkgutil

from benchmarks.registry import Registry
from methods.base import RetrievalMethod

METHODS: Registry[type[RetrievalMethod]] = Registry("method")

SHARED_MODULES = frozenset({"base", "layers", "losses", "mining", "train"})


def load_plugins() -> Registry[type[RetrievalMethod]]:
    """Import every plugin module (each registers itself) and return the registry."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in SHARED_MODULES:
            importlib.import_module(f"{__name__}.{module.name}")
    return METHODS
