"""What a training run starts from, settled before any work: the recipe's initialisation (or ``--init``), its
trunk's config, and the file, fetched or found, verified. Without the file and without a way to fetch it the run
stops at once with the same message as ``reproduce``: what it could not fetch and the ways to provide it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core.acquire import AcquireOptions
from benchmarks.core.errors import InputError
from benchmarks.core.fetchable import Needed, check_fetchable
from methods import initialisation as inits
from methods.base import RetrievalMethod


@dataclass(frozen=True)
class Start:
    """The config to build and the initialisation to load into its trunk (None: timm's random trunk)."""

    config_values: dict[str, Any]
    initialisation: inits.ResolvedInitialisation | None

    def record(self) -> dict[str, Any]:
        return self.initialisation.record() if self.initialisation else {"name": inits.NONE}


def default_initialisation(cls: type[RetrievalMethod], backbone: str) -> str | None:
    """The method's declared initialisation of ``backbone``, else the one known initialisation of that trunk."""
    declared = getattr(cls, "initialisations", {}).get(backbone)
    if declared:
        return str(declared)
    known = inits.for_backbone(backbone)
    return known[0] if len(known) == 1 else None


def settle(cls: type[RetrievalMethod], init: str | None, overrides: Mapping[str, Any], data_root: Path,
           acquire: AcquireOptions) -> Start:
    """The start of a run of ``cls`` with the user's config ``overrides`` and ``--init`` (None: the recipe's).

    A named initialisation brings its trunk unless the user set the backbone too, in which case the two must agree;
    whatever the start (``none`` and a file too), the config gets what the method needs of that trunk
    (``config_for_trunk``) where the user did not set it."""
    values = dict(overrides)
    spec = inits.INITIALISATIONS.get(init or "")
    if spec is not None:
        if values.get("backbone", spec.backbone) != spec.backbone:
            raise InputError(f"initialisation {init} is a {spec.backbone} trunk, --config backbone says "
                             f"{values['backbone']}: drop one of them", init)
        values.setdefault("backbone", spec.backbone)
    backbone = values.get("backbone", getattr(cls.config_class(), "backbone", None))
    values = {**cls.config_for_trunk(str(backbone)), **values}  # what the method needs of this trunk
    if init is None:
        init = default_initialisation(cls, str(backbone))
        if init is None:
            raise InputError(f"{cls.name} knows no ImageNet initialisation of a {backbone} trunk (known: "
                             f"{', '.join(sorted(inits.INITIALISATIONS))}): give --init NAME, --init PATH (a file "
                             f"in a known layout) or --init none (timm's random trunk)", str(backbone))
    if init == inits.NONE:
        return Start(values, None)
    if init in inits.INITIALISATIONS:
        spec = inits.INITIALISATIONS[init]
        if not inits.is_present(spec, data_root) and not spec.package:
            path = inits.folder(data_root) / spec.file_name
            mirrors = tuple(f"{m.rstrip('/')}/weights/init/{spec.file_name}" for m in acquire.mirrors)
            urls = mirrors + (() if acquire.mirror_only or spec.url is None else (spec.url,))
            try:
                check_fetchable([Needed(f"initialisation {init}", path, urls)], data_root, local_flag="--init PATH")
            except InputError as error:
                raise InputError(f"{error.message}\nOr train another network than the paper's: --init "
                                 f"efficientnet_lite0.in1k is an ImageNet trunk installed with the suite.") from None
    return Start(values, inits.resolve(init, str(backbone), data_root, acquire))
