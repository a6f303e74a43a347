"""(method, weights, dataset) -> RunResult: extraction, search and scoring, the same for every method."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.core.acquire import AcquireOptions, changed_files
from benchmarks.core.data_root import name_under
from benchmarks.core.errors import InputError
from benchmarks.core.provenance import environment, git_state
from benchmarks.evaluation.cache import DescriptorCache, extract_cached
from benchmarks.evaluation.cache_key import cache_key
from benchmarks.evaluation.compression import Compression, prepare_search
from benchmarks.evaluation.extract import Extracted, ExtractOptions
from benchmarks.evaluation.metrics import oxford_scores, recall_at_n, revisited_scores
from benchmarks.evaluation.results import Provenance, RunResult, metrics_of
from benchmarks.evaluation.search import Search, ranking_holding
from benchmarks.evaluation.stage_times import stage
from datasets.base import (
    GroundTruth,
    LoadedDataset,
    OxfordGroundTruth,
    PlaceGroundTruth,
    RevisitedGroundTruth,
    ground_truth_sha256,
)
from methods.base import RetrievalMethod
from methods.weights import LoadedWeights, resolve_weights

log = logging.getLogger(__name__)

RECALL_NS = (1, 5, 10, 20)


@dataclass(frozen=True)
class EvaluateOptions:
    data_root: Path
    split: str | None = None            # None: the dataset's evaluation split
    crop_queries: bool | None = None    # None: as the method's protocol says
    batch_size: int = 16
    device: str = "cpu"
    acquire: AcquireOptions = AcquireOptions()
    compression: str | None = None      # compact signatures, e.g. "pq32", "top256+pq64" (evaluation.compression)
    cache: bool = True                  # descriptors under <data_root>/cache/descriptors (resumable, shared)
    cache_dtype: str = "float32"        # "float16" halves the cache (and rounds the descriptors; recorded)
    on_bad_image: str = "fail"          # "skip": unreadable images are left out and recorded in the result


@dataclass(frozen=True)
class Descriptors:
    """A dataset's split as a method sees it: database (n_db, D) and query (n_q, D) descriptors."""

    loaded: LoadedDataset
    weights: LoadedWeights
    db: np.ndarray
    queries: np.ndarray
    queries_cropped: bool  # to their ground-truth boxes
    skipped_db: tuple[int, ...] = ()        # unreadable images left out (--on-bad-image skip): zero rows
    skipped_queries: tuple[int, ...] = ()


def extract_descriptors(method: type[RetrievalMethod], weights: str, dataset: Any, options: EvaluateOptions,
                        loaded: LoadedDataset | None = None) -> Descriptors:
    """Load the split (unless given as ``loaded``) and the weights, then extract database and query descriptors
    per the method's protocol. A kept file (ground truth) whose bytes changed since verified is refused."""
    changed = changed_files(dataset.folder(options.data_root), dataset.files)
    if changed:  # a truncated or edited ground truth would score a wrong number that looks right
        raise InputError(changed[0])
    if loaded is None:
        with stage("list"):
            loaded = dataset.load(options.data_root, options.split)
    with stage("weights"):
        resolved = resolve_weights(method, weights, options.data_root, options.acquire)
    model = resolved.model.to(options.device)
    protocol = model.protocol
    boxes = getattr(loaded.ground_truth, "query_boxes", None)
    crop = protocol.crop_queries if options.crop_queries is None else options.crop_queries
    cropped = bool(crop and boxes is not None)
    log.info("%s on %s: queries %s", method.name, dataset.name, "cropped to their boxes" if cropped else "whole")
    extraction = ExtractOptions(batch_size=options.batch_size, device=options.device,
                                on_bad_image=options.on_bad_image, label=f"{method.name} weights {resolved.name}")

    def descriptors_of(paths: tuple[Path, ...], crop_boxes: np.ndarray | None) -> Extracted:
        cache = None
        if options.cache:
            with stage("cache key (image contents hashed)"):
                key = cache_key(method.name, model.config.to_dict(), resolved.sha256, protocol, paths, crop_boxes,
                                options.data_root, options.device, options.cache_dtype)
            cache = DescriptorCache.under(options.data_root, key)
        return extract_cached(model, paths, protocol, crop_boxes, extraction, cache)

    db, queries = descriptors_of(loaded.db_paths, None), descriptors_of(loaded.query_paths, boxes if crop else None)
    return Descriptors(loaded, resolved, np.asarray(db.descriptors, dtype=np.float32),
                       np.asarray(queries.descriptors, dtype=np.float32), cropped, db.skipped, queries.skipped)


def evaluate(method: type[RetrievalMethod], weights: str, dataset: Any, options: EvaluateOptions) -> RunResult:
    """Extract descriptors of the dataset's database and queries with the method, search, score."""
    started = time.perf_counter()
    compression = Compression.parse(options.compression) if options.compression else None
    found = extract_descriptors(method, weights, dataset, options)
    loaded, resolved, db, queries = found.loaded, found.weights, found.db, found.queries
    model, protocol = resolved.model, resolved.model.protocol
    metrics, per_query = _score(queries, _search_over_read(db, found.skipped_db, compression), loaded.ground_truth)
    commit, dirty = git_state()
    device = torch.cuda.get_device_name() if options.device.startswith("cuda") else options.device
    with stage("manifest and digests"):
        manifest, descriptor_sha256 = _manifest_sha256(loaded, options.data_root), _descriptor_sha256(db, queries)
    provenance = Provenance(
        git_commit=commit, git_dirty=dirty, weights_sha256=resolved.sha256, dataset_manifest_sha256=manifest,
        ground_truth_sha256=ground_truth_sha256(loaded.ground_truth), descriptor_sha256=descriptor_sha256,
        environment=environment(device), seed=None, date=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_time_s=round(time.perf_counter() - started, 3),
        command=shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        trunk_initialisation=resolved.trunk_initialisation)
    config = {"method": model.config.to_dict(), "split": dataset.split_name(options.split),
              "protocol": {**{k: v for k, v in dataclasses.asdict(protocol).items() if k != "crop_queries"},
                           "queries_cropped": found.queries_cropped},
              "descriptor_dim": int(db.shape[1])}
    if (origin := dataset.origin(options.data_root, loaded)) is not None:
        config["dataset_folder"] = origin
    if compression is not None:
        config["compression"] = compression.describe(int(db.shape[1]))
    if options.cache and options.cache_dtype != "float32":
        config["descriptor_storage"] = options.cache_dtype
    notes = _skipped_images(config, options.data_root, (loaded.db_paths, found.skipped_db),
                            (loaded.query_paths, found.skipped_queries))
    return RunResult(method=method.name, weights=resolved.name, dataset=dataset.name, protocol=str(dataset.protocol),
                     config=config, metrics=metrics, per_query=per_query, provenance=provenance, notes=notes)


def _skipped_images(config: dict[str, Any], data_root: Path, db: tuple[tuple[Path, ...], tuple[int, ...]],
                    queries: tuple[tuple[Path, ...], tuple[int, ...]]) -> list[str]:
    """Record images left out by ``--on-bad-image skip`` in ``config["skipped_images"]``; the result's note."""
    skipped = {part: [name_under(paths[i], data_root) for i in indices]
               for part, (paths, indices) in (("database", db), ("queries", queries))}
    if not any(skipped.values()):
        return []
    config["skipped_images"] = skipped
    return [f"{len(skipped['database'])} database and {len(skipped['queries'])} query image(s) could not be read "
            "and were left out (--on-bad-image skip): skipped database images rank last for every query; a skipped "
            "query has a zero descriptor (its ranking is the database in index order)"]


class _SkippingSearch:
    """A search over the database images that were read: skipped ones (``--on-bad-image skip``) never enter a
    top-k and close every full ranking in index order, so ground-truth ids keep their meaning."""

    def __init__(self, inner: Search, kept: np.ndarray, skipped: np.ndarray) -> None:
        self.inner, self.kept, self.skipped = inner, kept, skipped

    @property
    def n_db(self) -> int:
        return len(self.kept) + len(self.skipped)

    def top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        ids = self.kept[self.inner.top_k(queries, min(k, len(self.kept)))]
        if k <= len(self.kept):
            return ids
        tail = np.broadcast_to(self.skipped[:k - len(self.kept)], (ids.shape[0], min(k, self.n_db) - len(self.kept)))
        return np.hstack([ids, tail])


def _search_over_read(db: np.ndarray, skipped: tuple[int, ...], compression: Compression | None) -> Search:
    if not skipped:
        return prepare_search(db, compression)
    kept = np.setdiff1d(np.arange(db.shape[0]), skipped)
    return _SkippingSearch(prepare_search(db[kept], compression), kept, np.asarray(skipped, dtype=np.int64))


def _score(queries: np.ndarray, search: Search, gt: GroundTruth) -> tuple[dict[str, float], dict[str, Any]]:
    """Rankings need every positive inside them for exact AP (benchmarks.evaluation.search.ranking_holding)."""
    if isinstance(gt, PlaceGroundTruth):
        depth = RECALL_NS[-1] * (gt.panorama_size or 1)
        with stage("search"):
            top = search.top_k(queries, depth)
        with stage("metrics"):
            return metrics_of(recall_at_n(top, gt.utm_queries, gt.utm_db, gt.threshold, RECALL_NS, gt.panorama_size))
    if isinstance(gt, RevisitedGroundTruth):
        positives = [np.concatenate([e, h]) for e, h in zip(gt.easy, gt.hard, strict=True)]
        with stage("search"):
            ranks = ranking_holding(search, queries, positives)
        with stage("metrics"):
            return metrics_of(revisited_scores(ranks, gt.easy, gt.hard, gt.junk, gt.n_db))
    if isinstance(gt, OxfordGroundTruth):
        with stage("search"):
            ranks = ranking_holding(search, queries, gt.positives)
        with stage("metrics"):
            return metrics_of(oxford_scores(ranks, gt.positives, gt.junk, gt.n_db))
    raise TypeError(f"cannot evaluate on ground truth of type {type(gt).__name__} (a training split?)")


def _descriptor_sha256(db: np.ndarray, queries: np.ndarray, rows_per_block: int = 65536) -> str:
    """sha256 of the database's then the queries' float32 bytes, streamed in blocks of rows (a memory-mapped
    database is never copied whole)."""
    digest = hashlib.sha256()
    for array in (db, queries):
        for start in range(0, len(array), rows_per_block):
            digest.update(np.ascontiguousarray(array[start:start + rows_per_block]).data)
    return digest.hexdigest()


def _manifest_sha256(loaded: LoadedDataset, data_root: Path) -> str:
    """A digest of the evaluated images' names relative to the data root and their sizes in bytes."""
    digest = hashlib.sha256()
    for path in (*loaded.db_paths, *loaded.query_paths):
        digest.update(f"{path.relative_to(data_root) if path.is_relative_to(data_root) else path.name}\t"
                      f"{path.stat().st_size}\n".encode())
    return digest.hexdigest()
