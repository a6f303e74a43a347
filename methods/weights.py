"""Weights files: our checkpoint format, named published weights fetched and converted, strict loading.

A checkpoint is one ``torch.save`` dict read back with ``weights_only=True`` (no code from data): the
method, the weights name ``arch.tag``, the Config fields, the input normalisation the weights expect, the
state dict and a JSON-able ``origin`` (how it was trained or converted). Next to it, ``<file>.json`` says
the same in text with the file's sha256. Published weights (``WeightsSpec.url``) are fetched through the
one download path into ``<data root>/weights/<method>/`` and converted once by the plugin's
``convert_weights``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from benchmarks.core.acquire import AcquireOptions, FileSpec, acquire_files
from benchmarks.core.atomic import atomic_write_bytes, atomic_write_text
from benchmarks.core.download import sha256_of
from benchmarks.core.errors import InputError
from benchmarks.core.ids import WEIGHTS_NAME_PATTERN
from methods.base import Config, RetrievalMethod, protocol_changes

log = logging.getLogger(__name__)

FORMAT = "image-retrieval-benchmarks/weights"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedWeights:
    """A model in eval mode with its weights' name and the sha256 of the file they came from."""

    model: RetrievalMethod
    name: str
    sha256: str
    path: Path
    trunk_initialisation: dict[str, Any] | None = None  # what training started from (checkpoints of this suite)


def config_from(cls: type[RetrievalMethod], values: Mapping[str, Any], source: Path | str) -> Config:
    """The method's Config from a mapping; unknown fields are an error naming ``source``."""
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{cls.name} has no config field(s) {unknown}; known: {sorted(known)}", source)
    return cls.config_class(**values)


def save_checkpoint(path: Path, model: RetrievalMethod, weights_name: str, origin: Mapping[str, Any]) -> str:
    """Atomically write ``path`` and ``path.json``; returns the checkpoint's sha256."""
    if not WEIGHTS_NAME_PATTERN.match(weights_name):
        raise ValueError(f"weights name {weights_name!r} is not 'arch.tag' in lowercase")
    changes = protocol_changes(model.protocol, type(model).protocol)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": model.name, "weights": weights_name,
               "config": model.config.to_dict(), "mean": list(model.protocol.mean), "std": list(model.protocol.std),
               "protocol": {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()},
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               "origin": dict(origin)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    digest = sha256_of(path)
    atomic_write_text(Path(f"{path}.json"), json.dumps(
        {"sha256": digest,
         **{k: payload[k] for k in ("method", "weights", "config", "mean", "std", "protocol", "origin")}},
        indent=2, sort_keys=True) + "\n")
    return digest


def load_checkpoint(cls: type[RetrievalMethod], path: Path) -> LoadedWeights:
    """Build ``cls`` from a checkpoint file; every tensor must fill a parameter or buffer of the same shape."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("no such weights file", path) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign or corrupt file
        # the type only: torch's message is paragraphs of advice to load with weights_only=False (runs code)
        raise InputError(f"not a readable weights file ({type(error).__name__}); give a file written "
                         f"by `python -m benchmarks train` or converted from published weights", path) from None
    _check_payload(payload, path)
    if payload["method"] != cls.name:
        raise InputError(f"these weights are for method {payload['method']!r}, not {cls.name!r}", path)
    stored = {**cls.config_class.absent_means, **payload["config"]}  # an older checkpoint computes as it did
    try:
        model = cls(config_from(cls, stored, path))
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as error:  # a field of the wrong type
        raise InputError(f"damaged checkpoint: its config does not build a {cls.name} model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160] if str(error) else ''}); write it again", path) from None
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in payload.get("protocol", {}).items()}
    try:  # the protocol it was trained with where that departs from the method's (train --protocol)
        model.protocol = dataclasses.replace(model.protocol, mean=tuple(payload["mean"]), std=tuple(payload["std"]),
                                             **changes)
    except (TypeError, ValueError) as error:
        raise InputError(f"the checkpoint's protocol is not one this suite reads ({error}); retrain it", path) from None
    load_state_strictly(model, payload["state_dict"], path)
    started = payload.get("origin", {}).get("trunk_initialisation")
    return LoadedWeights(model.eval(), payload["weights"], sha256_of(path), Path(path),
                         dict(started) if isinstance(started, dict) else None)


_FIELDS = {"method": str, "weights": str, "config": dict, "mean": list, "std": list, "state_dict": dict}


def _check_payload(payload: object, path: Path) -> None:
    """Refuse a checkpoint that is not ours or lacks a field or has one of the wrong type, naming the field."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} checkpoint", path)
    for field, kind in _FIELDS.items():
        if not isinstance(payload.get(field), kind):
            found = "missing" if field not in payload else f"a {type(payload[field]).__name__}"
            raise InputError(f"damaged checkpoint: field {field!r} should be a {kind.__name__}, is {found}; "
                             "write it again (train, or convert the published weights)", path)
    numbers = [*payload["mean"], *payload["std"]]
    if len(numbers) != 6 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
        raise InputError("damaged checkpoint: 'mean' and 'std' must be 3 finite numbers each", path)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        raise InputError("damaged checkpoint: 'state_dict' must map names to tensors", path)
    if not isinstance(payload.get("origin", {}), dict):
        raise InputError("damaged checkpoint: 'origin' must be a dict", path)


def load_state_strictly(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
    """``model.load_state_dict`` that names every missing, unexpected and mis-shaped tensor in one error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        lines = ([f"missing: {', '.join(missing)}"] if missing else []) \
            + ([f"unexpected: {', '.join(unexpected)}"] if unexpected else []) \
            + ([f"shape mismatch: {'; '.join(shapes)}"] if shapes else [])
        raise InputError("weights do not match the model:\n  " + "\n  ".join(lines), source)
    model.load_state_dict(dict(state), strict=True)


def resolve_weights(cls: type[RetrievalMethod], weights: str, data_root: Path,
                    options: AcquireOptions | None = None) -> LoadedWeights:
    """``weights`` is a name of ``cls.weights`` or a path. Published weights are fetched (mirrors, resume, sha256
    or lock file) and converted once into ``<data root>/weights/<method>/<name>.pt``; their ``sha256`` is then
    the published file's. A path is a checkpoint of this suite, or a local copy of a published file (known by its
    pinned sha256, then named and cached as if fetched), or another file of the released layout (converted)."""
    if weights not in cls.weights:
        path = Path(weights)
        if not path.is_file():
            if path.exists() or weights.endswith((".pt", ".pth")):
                return load_checkpoint(cls, path)
            raise InputError(f"{cls.name} has no weights named {weights!r} (known: {sorted(cls.weights)}); give a "
                             f"name or the path of a checkpoint", weights)
        published = {spec.sha256: name for name, spec in cls.weights.items() if spec.sha256}
        name = published.get(sha256_of(path)) if published else None
        return _converted(cls, name, path, data_root) if name else _checkpoint_or_released(cls, path)
    spec = cls.weights[weights]
    folder = data_root / "weights" / cls.name
    if spec.url is None:
        converted = folder / f"{weights}.pt"
        if converted.exists():
            return load_checkpoint(cls, converted)
        raise InputError(f"{cls.name} weights {weights} are not published: train them (python -m benchmarks train "
                         f"{cls.name} ...) and pass the checkpoint's path", converted)
    source = FileSpec(name=Path(urlparse(spec.url).path).name, urls=(spec.url,), sha256=spec.sha256)
    acquire_files(folder, f"weights/{cls.name}", (source,), options or AcquireOptions())
    return _converted(cls, weights, folder / source.name, data_root)


def _converted(cls: type[RetrievalMethod], weights: str, source: Path, data_root: Path) -> LoadedWeights:
    """Published weights ``weights`` from their file ``source``, converted once into the data root."""
    spec = cls.weights[weights]
    converted = data_root / "weights" / cls.name / f"{weights}.pt"
    source_sha = sha256_of(source)
    if not (converted.exists() and _origin_sha(converted) == source_sha):
        log.info("converting %s into %s", source, converted)
        model = cls.convert_weights(source, config_from(cls, spec.config, weights))
        save_checkpoint(converted, model, weights, {"converted_from": spec.url, "source_sha256": source_sha,
                                                    "conversion": spec.conversion})
    # Results name the published file's sha256: the one anybody can check against the download.
    return dataclasses.replace(load_checkpoint(cls, converted), sha256=source_sha)


def _checkpoint_or_released(cls: type[RetrievalMethod], path: Path) -> LoadedWeights:
    """A checkpoint of this suite, else a file the method's converter reads (named ``<backbone>.<file stem>``)."""
    try:
        return load_checkpoint(cls, path)
    except InputError as not_ours:
        if cls.convert_weights.__func__ is RetrievalMethod.convert_weights.__func__:  # type: ignore[attr-defined]
            raise
        try:
            model = cls.convert_weights(path, cls.config_class())
        except (InputError, NotImplementedError) as error:
            raise InputError(f"neither a checkpoint of this suite ({not_ours.message}) nor released {cls.name} "
                             f"weights ({getattr(error, 'message', error)})", path) from None
    stem = re.sub(r"[^a-z0-9_\-]", "_", path.stem.lower())
    name = f"{getattr(model.config, 'backbone', cls.name)}.{stem}"
    return LoadedWeights(model.eval(), name, sha256_of(path), path)


def _origin_sha(checkpoint: Path) -> str | None:
    try:
        sidecar = json.loads(Path(f"{checkpoint}.json").read_text())
    except (OSError, ValueError):
        return None
    origin = sidecar.get("origin") if isinstance(sidecar, dict) else None
    source = origin.get("source_sha256") if isinstance(origin, dict) else None
    return source if isinstance(source, str) else None  # a damaged sidecar: converted again
