"""Strict readers of JSON and YAML files: what the standard loaders accept silently is refused, naming the file.

Refused: bytes that are not UTF-8 (the offset named), a key given twice in one object or mapping (the standard
loaders keep the last one), ``NaN`` and ``Infinity`` in JSON (not JSON, though Python writes and reads them),
and nesting deeper than :data:`MAX_DEPTH` (the loaders recurse; a file of a million ``[`` ends in RecursionError).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from benchmarks.core.errors import InputError

MAX_DEPTH = 64  # every file of the suite nests fewer than 10 levels


def read_text(path: Path, what: str) -> str:
    """The file's text, decoded as UTF-8 (one line naming the offset of the first bad byte otherwise)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read {what}: {error.strerror or error}", path) from None
    except UnicodeDecodeError as error:
        bad = error.object[error.start:error.start + 4]
        raise InputError(f"{what} is not UTF-8 text (byte {error.start}: {bad!r}); save it as UTF-8", path) from None


def _depth_ok(value: Any) -> bool:
    """Whether ``value`` nests at most MAX_DEPTH containers deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ValueError(f"key {duplicated[0]!r} appears twice in one object")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path`` (``what`` names the kind of file in the messages)."""
    text = read_text(path, what)
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except RecursionError:
        data = None
    except ValueError as error:  # JSONDecodeError is one
        raise InputError(f"{what} is not valid JSON ({error})", path) from None
    if data is None and text.strip() != "null" or not _depth_ok(data):
        raise InputError(f"{what} nests deeper than {MAX_DEPTH} levels: not a file the suite writes", path)
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (a merged ``<<`` key may be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden, as YAML says
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (safe types only; duplicate keys, bad bytes and deep nesting refused)."""
    text = read_text(path, what)
    loader = _UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except RecursionError:
        raise InputError(f"{what} nests deeper than {MAX_DEPTH} levels", path) from None
    except yaml.YAMLError as error:
        raise InputError(f"cannot read {what} ({' '.join(str(error).split())})", path) from None
    finally:
        loader.dispose()
    if not _depth_ok(data):
        raise InputError(f"{what} nests deeper than {MAX_DEPTH} levels", path)
    return data
