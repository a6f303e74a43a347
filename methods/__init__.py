"""Method plugins. Each paper is one module here that registers its RetrievalMethod in ``METHODS``.

Every module of this package is imported by :func:`load_plugins`; a plugin module registers itself on import,
shared ones (the contract, layers, formats) register nothing.
"""
from __future__ import annotations

from benchmarks.core.registry import Registry, import_plugins
from methods.base import RetrievalMethod

METHODS: Registry[type[RetrievalMethod]] = Registry("method")


def load_plugins() -> Registry[type[RetrievalMethod]]:
    """Import every plugin module (each registers itself) and return the registry."""
    import_plugins(__name__, __path__)
    return METHODS
