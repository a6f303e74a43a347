"""Reproducing a paper's table: every dataset and weights file it needs, checked and fetched first, then each
(weights, dataset) evaluated by the shared evaluator.

A method declares its :class:`~methods.base.Reproduction` (datasets, ``+1M`` variants, default weights). Before
any heavy work the plan is checked: what is not under the data root yet is listed, every missing file's sources
(mirrors first) are probed, and when one cannot be reached the run stops with one message naming each such
file and the three ways to provide it; nothing has been written by then.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.core.acquire import AcquireOptions, FileSpec, is_acquired
from benchmarks.core.errors import InputError
from benchmarks.core.fetchable import Needed, cannot_fetch_message, check_fetchable
from benchmarks.evaluation.evaluate import EvaluateOptions, evaluate
from benchmarks.evaluation.results import RunResult
from datasets import load_plugins as load_datasets
from datasets.base import DatasetSpec
from datasets.names import dataset as dataset_by_name
from methods.base import Reproduction, RetrievalMethod
from methods.weights import resolve_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReproduceOptions:
    data_root: Path
    r1m: bool = False                   # add the method's +1M datasets
    datasets: tuple[str, ...] = ()      # instead of the method's own list
    weights: tuple[str, ...] = ()       # names or paths instead of the method's released weights
    crop_queries: bool | None = None    # None: as the method's protocol says
    batch_size: int = 16
    device: str = "cpu"
    acquire: AcquireOptions = AcquireOptions()


def plan(method: type[RetrievalMethod], options: ReproduceOptions) -> tuple[list[DatasetSpec], list[str]]:
    """The datasets and weights the run evaluates."""
    reproduction = getattr(method, "reproduction", None) or Reproduction(datasets=(), weights=())
    names = options.datasets or (*reproduction.datasets, *(reproduction.r1m_datasets if options.r1m else ()))
    weights = options.weights or reproduction.weights
    if not weights and reproduction.training is not None:
        raise InputError(f"{method.name} has no published weights: train them as `reproduce {method.name} --plan` "
                         f"lists (make reproduce-{method.name} does both) and give the checkpoint with --weights PATH")
    if not (names and weights):
        raise InputError(f"{method.name} declares no reproduction: give --dataset and --weights")
    return [dataset_by_name(name) for name in names], list(weights)


def missing_files(method: type[RetrievalMethod], datasets: list[DatasetSpec], weights: list[str],
                  options: ReproduceOptions) -> list[Needed]:
    """Every file of the plan neither acquired nor already placed under the data root (nothing is written)."""
    registry, root = load_datasets(), options.data_root
    specs = {spec.name: spec for dataset in datasets
             for spec in (dataset, *(registry.get(r)() for r in dataset.requires))}
    needed = []
    for dataset_spec in specs.values():
        folder = dataset_spec.folder(root)
        needed += [Needed(f"dataset {dataset_spec.name}", folder / f.name,
                          _sources(f, dataset_spec.name, options.acquire), f.manual)
                   for f in dataset_spec.files if not _present(folder, f)]
    for name in weights:
        if name not in method.weights:
            if not Path(name).exists():
                raise InputError(f"no such weights file, and {method.name} has no weights of that name "
                                 f"(known: {sorted(method.weights)})", name)
            continue
        spec, folder = method.weights[name], root / "weights" / method.name
        if spec.url is None:
            if not (folder / f"{name}.pt").exists():
                needed.append(Needed(f"weights {method.name} {name}", folder / f"{name}.pt", (),
                                     "not published: train them and give the checkpoint with --weights PATH"))
            continue
        file = FileSpec(Path(urlparse(spec.url).path).name, urls=(spec.url,), sha256=spec.sha256)
        if not _present(folder, file):
            needed.append(Needed(f"weights {method.name} {name}", folder / file.name,
                                 _sources(file, f"weights/{method.name}", options.acquire)))
    return needed


def _present(folder: Path, file: FileSpec) -> bool:
    return is_acquired(folder, file) or (folder / file.name).exists()


def _sources(file: FileSpec, prefix: str, acquire: AcquireOptions) -> tuple[str, ...]:
    mirrors = tuple(f"{m.rstrip('/')}/{prefix}/{file.name}" for m in acquire.mirrors)
    return mirrors + (() if acquire.mirror_only else file.urls)


def prepare(method: type[RetrievalMethod], datasets: list[DatasetSpec], weights: list[str],
            options: ReproduceOptions) -> None:
    """Check, then fetch (or generate) every dataset and fetch and convert every weights file of the plan."""
    check_fetchable(missing_files(method, datasets, weights, options), options.data_root)
    failures = []
    for dataset in datasets:
        try:
            dataset.prepare(options.data_root, options.acquire)
        except InputError as error:
            failures.append(f"  dataset {dataset.name}: {error}")
    for name in weights:
        try:
            resolve_weights(method, name, options.data_root, options.acquire)
        except InputError as error:
            failures.append(f"  weights {method.name} {name}: {error}")
    if failures:
        raise InputError(cannot_fetch_message("finished files are kept: run again to resume", failures,
                                              options.data_root))


def reproduce(method: type[RetrievalMethod], options: ReproduceOptions) -> Iterator[RunResult]:
    """Prepare everything, then yield one result per (weights, dataset), weights by weights."""
    datasets, weights = plan(method, options)
    crop = method.protocol.crop_queries if options.crop_queries is None else options.crop_queries
    log.info("reproducing %s: weights %s on %s; queries %s (%s)", method.name, ", ".join(weights),
             ", ".join(d.name for d in datasets), "cropped to their boxes" if crop else "whole",
             "the method's protocol" if options.crop_queries is None else "--crop-queries/--no-crop-queries")
    prepare(method, datasets, weights, options)
    evaluate_options = EvaluateOptions(data_root=options.data_root, crop_queries=options.crop_queries,
                                       batch_size=options.batch_size, device=options.device,
                                       acquire=options.acquire)
    for name in weights:
        for dataset in datasets:
            yield evaluate(method, name, dataset, evaluate_options)
