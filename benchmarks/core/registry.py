"""Registry[T]: plugins register by decorator under a unique lowercase name; lookups suggest close names."""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from benchmarks.core.errors import InputError
from benchmarks.core.ids import NAME_PATTERN

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plugins of one kind (``"method"``, ``"dataset"``), in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("netvlad")``. Duplicate or malformed names raise ``ValueError``."""
        if not NAME_PATTERN.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be a lowercase id matching {NAME_PATTERN.pattern}")

        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice: {self._items[name]!r} and {item!r}")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        """The plugin called ``name``; an unknown name raises :class:`InputError` naming the close ones."""
        try:
            return self._items[name]
        except KeyError:
            known, hint = ", ".join(self._items) or "none", did_you_mean(name, self._items)
            raise InputError(f"unknown {self.kind} {name!r}{hint} (registered: {known})") from None

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` naming the choices close to a misspelt ``name``, or ``""`` when none is."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def import_plugins(package: str, path: list[str]) -> None:
    """Import every module of ``package`` (its ``__path__``): each plugin registers itself on import."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
