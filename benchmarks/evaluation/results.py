"""RunResult: one JSON file per (dataset, method, weights) run, with its metrics and full provenance.

Files live at ``results/<dataset>/<method>/<weights>.json``, or ``<weights>+<spec>.json`` for a run on compact
signatures (``config["compression"]["spec"]``, such as ``pq32``) so that it never replaces the uncompressed
one. They are written atomically, one writer at a time (a lock), and validated on load: a result that does
not match the schema is refused with the file and the field named. Results from a tree with uncommitted
changes are refused unless allowed (``--allow-dirty``, then noted in the result); :func:`stale_provenance`
says whether a result's weights and ground truth are still those the plugins declare.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from benchmarks.core.atomic import atomic_write_text, remove_leftovers
from benchmarks.core.errors import InputError
from benchmarks.core.ids import COMPRESSION_PATTERN, NAME_PATTERN, SHA256_PATTERN, WEIGHTS_NAME_PATTERN
from benchmarks.core.locks import exclusive
from benchmarks.core.provenance import REPO_ROOT, git_state, is_tracked
from benchmarks.core.strict_load import read_json
from benchmarks.evaluation.metrics import DIFFICULTIES, RankingScores, RecallScores
from datasets.base import Protocol, ground_truth_sha256

SCHEMA_VERSION = 1
RESULTS_DIR = REPO_ROOT / "results"
PROTOCOLS = tuple(p.value for p in Protocol)
LOCK_WAIT_S = 60.0  # a result is written in milliseconds: a writer waits for another rather than failing
DIRTY_NOTE = "evaluated from a tree with uncommitted changes (--allow-dirty): git_commit does not hold this code"
_METRIC_KEY = re.compile(rf"^(map|mp@\d+|recall@\d+)(_({'|'.join(DIFFICULTIES)}))?$")
_PER_QUERY_KEY = re.compile(rf"^(ap(_({'|'.join(DIFFICULTIES)}))?|first_hit)$")
AGREEMENT = 1e-9  # a metric and the mean of its per-query values differ by float summation order at most


@dataclass(frozen=True)
class Provenance:
    """Everything needed to tell whether two results are comparable and to re-run one."""

    git_commit: str
    git_dirty: bool
    weights_sha256: str | None
    dataset_manifest_sha256: str | None
    ground_truth_sha256: str
    descriptor_sha256: str | None
    environment: dict[str, str]
    seed: int | None
    date: str  # ISO 8601 with time zone
    wall_time_s: float
    command: str
    trunk_initialisation: dict[str, Any] | None = None  # {name, sha256, ...}: what the weights' training started from


@dataclass(frozen=True)
class RunResult:
    """Metrics are fractions (0..1) under keys such as ``map_medium``, ``mp@10_hard``, ``recall@5``;
    ``per_query`` keeps each query's AP (or first-hit rank) for paired comparisons, None where excluded."""

    method: str
    weights: str
    dataset: str
    protocol: str
    config: dict[str, Any]
    metrics: dict[str, float]
    per_query: dict[str, list[float | None]]
    provenance: Provenance
    schema_version: int = SCHEMA_VERSION
    notes: list[str] = field(default_factory=list)

    def relative_path(self) -> Path:
        return _relative_path(self.dataset, self.method, self.weights, self.config)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _relative_path(dataset: str, method: str, weights: str, config: dict[str, Any]) -> Path:
    compression = config.get("compression")
    suffix = f"+{compression['spec']}" if isinstance(compression, dict) else ""
    return Path(dataset) / method / f"{weights}{suffix}.json"


def metrics_of(
    scores: dict[str, RankingScores] | RankingScores | RecallScores,
) -> tuple[dict[str, float], dict[str, list[float | None]]]:
    """(metrics, per_query) of scores from :mod:`benchmarks.evaluation.metrics`, in the result's key convention."""
    metrics: dict[str, float] = {}
    per_query: dict[str, list[float | None]] = {}
    if isinstance(scores, RecallScores):
        metrics.update({f"recall@{n}": scores.recall(n) for n in scores.ns})
        per_query["first_hit"] = list(scores.first_hit_list())
        return metrics, per_query
    settings = {"": scores} if isinstance(scores, RankingScores) else {f"_{k}": v for k, v in scores.items()}
    for suffix, setting in settings.items():
        metrics[f"map{suffix}"] = setting.map
        metrics.update({f"mp@{k}{suffix}": setting.mp(k) for k in setting.precision})
        per_query[f"ap{suffix}"] = setting.ap_list()
    return metrics, per_query


def write_result(result: RunResult, root: Path = RESULTS_DIR) -> Path:
    """Validate, then atomically write ``root/<dataset>/<method>/<weights>.json`` holding its lock; returns
    the path. Two runs writing one result take turns; the last one's result stays."""
    path = root / result.relative_path()
    _validate(asdict(result), path)
    with exclusive(path, wait_s=LOCK_WAIT_S, doing="writing"):
        remove_leftovers(path)
        atomic_write_text(path, result.to_json())
    return path


def planned_path(root: Path, dataset: str, method: str, weights: str, compression: str | None = None) -> Path:
    """Where :func:`write_result` puts the result of ``weights`` of ``method`` on ``dataset`` under ``root``."""
    config = {"compression": {"spec": compression}} if compression else {}
    return root / _relative_path(dataset, method, weights, config)


def refuse_committed(path: Path) -> None:
    """Refuse to replace a result committed in the repository (run without an explicit results folder)."""
    if is_tracked(path):
        shown = path.resolve().relative_to(REPO_ROOT) if path.resolve().is_relative_to(REPO_ROOT) else path
        raise InputError("a committed result, left as it is: pass --overwrite to replace it (git diff then shows "
                         "what changed), or --results DIR to write elsewhere", shown)


def require_clean_tree(allow_dirty: bool) -> None:
    """Refuse to start a run whose result could not name the code that made it, unless ``allow_dirty``."""
    commit, dirty = git_state()
    if dirty and not allow_dirty:
        where = "is not a git checkout" if commit == "unknown" else "has uncommitted changes (git status)"
        raise InputError(f"the suite {where}: a result must name the commit that produced it; commit first, "
                         "or pass --allow-dirty (the result then says so)", REPO_ROOT)


def record_dirty(result: RunResult, allow_dirty: bool) -> RunResult:
    """``result`` with :data:`DIRTY_NOTE` when it came from a dirty tree; refused there unless ``allow_dirty``."""
    if not result.provenance.git_dirty:
        return result
    if not allow_dirty:
        raise InputError("the suite had uncommitted changes when the run ended (git status); commit and run "
                         "again, or pass --allow-dirty", REPO_ROOT)
    return result if DIRTY_NOTE in result.notes else replace(result, notes=[*result.notes, DIRTY_NOTE])


def stale_provenance(result: RunResult, data_root: Path | None = None) -> list[str]:
    """Why ``result`` no longer matches what the plugins declare (empty: it still does).

    Checked: the method and dataset are registered with the result's protocol (a folder dataset: found where
    its result says, with the contents it was scored on); the weights' sha256 is the
    one the method's WeightsSpec publishes (or, with ``data_root``, the one its lock file recorded); with
    ``data_root`` and the dataset there, the ground truth loaded now has the result's digest. What cannot be
    checked (trained weights without a declared checksum, data not downloaded) is not reported.
    """
    from benchmarks.core.acquire import ChecksumLock
    from datasets import load_plugins as load_datasets
    from datasets.names import dataset as dataset_named
    from methods import load_plugins as load_methods

    problems = []
    label = f"{result.dataset}/{result.method}/{result.weights}"
    methods, datasets = load_methods(), load_datasets()
    if result.method not in methods:
        problems.append(f"{label}: method {result.method!r} is not registered any more")
    else:
        spec = methods.get(result.method).weights.get(result.weights)
        declared = None if spec is None else spec.sha256
        if spec is not None and declared is None and spec.url is not None and data_root is not None:
            name = Path(urlparse(spec.url).path).name  # where resolve_weights keeps the published file
            declared = ChecksumLock(Path(data_root) / "weights" / result.method).sha256(name)
        if declared is not None and result.provenance.weights_sha256 != declared:
            problems.append(f"{label}: weights sha256 {result.provenance.weights_sha256} differs from the "
                            f"declared {declared}")
    folder = result.config.get("dataset_folder")
    if folder is not None:  # a folder of one's own (revisited:PATH, places:PATH): checked where it is now
        try:
            dataset = dataset_named(f"{folder['format']}:{folder['path']}")
        except InputError:
            return problems  # the folder is not here: nothing to compare with
    elif result.dataset not in datasets:
        return [*problems, f"{label}: dataset {result.dataset!r} is not registered any more"]
    else:
        dataset = datasets.get(result.dataset)()
    if str(dataset.protocol) != result.protocol:
        problems.append(f"{label}: protocol {result.protocol!r}, the dataset now says {str(dataset.protocol)!r}")
    if data_root is not None:
        try:
            loaded = dataset.load(Path(data_root), result.config.get("split"))
        except InputError:
            return problems  # not downloaded here: nothing to compare with
        now = ground_truth_sha256(loaded.ground_truth)
        if now != result.provenance.ground_truth_sha256:
            problems.append(f"{label}: ground truth sha256 {result.provenance.ground_truth_sha256} differs from "
                            f"the dataset's now ({now})")
        if folder is not None and (contents := dataset.origin(Path(data_root), loaded)["sha256"]) != folder["sha256"]:
            problems.append(f"{label}: the folder's contents (sha256 {contents}) differ from those scored "
                            f"({folder['sha256']}): {folder['path']}")
    return problems


def load_result(path: str | Path) -> RunResult:
    """Read and validate a result file."""
    data = read_json(Path(path), "result")
    _validate(data, Path(path))
    return RunResult(**{**data, "provenance": Provenance(**data["provenance"])})


def _require(condition: bool, message: str, path: Path) -> None:
    if not condition:
        raise InputError(f"invalid result: {message}", path)


def _validate(data: Any, path: Path) -> None:
    _require(isinstance(data, dict), "the file must hold a JSON object", path)
    _require(data.get("schema_version") == SCHEMA_VERSION,
             f"schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}", path)
    expected = {f for f in RunResult.__dataclass_fields__}
    _require(set(data) == expected, f"fields {sorted(set(data) ^ expected)} missing or unexpected", path)
    for key in ("method", "dataset"):
        _require(isinstance(data[key], str) and bool(NAME_PATTERN.match(data[key])), f"{key} must be a lowercase id",
                 path)
    _require(isinstance(data["weights"], str) and bool(WEIGHTS_NAME_PATTERN.match(data["weights"])),
             "weights must be 'arch.tag'", path)
    _require(data["protocol"] in PROTOCOLS, f"protocol must be one of {PROTOCOLS}", path)
    _require(isinstance(data["config"], dict), "config must be an object", path)
    compression = data["config"].get("compression")
    _require(compression is None or (isinstance(compression, dict) and isinstance(compression.get("spec"), str)
                                     and bool(COMPRESSION_PATTERN.match(compression["spec"]))),
             "config.compression must be an object whose spec is like pq32, top256, top512+pq64", path)
    metrics = data["metrics"]
    _require(isinstance(metrics, dict) and bool(metrics), "metrics must be a non-empty object", path)
    for key, value in metrics.items():
        _require(bool(_METRIC_KEY.match(key)), f"metric key {key!r} is not like map_medium, mp@10_hard, recall@5",
                 path)
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                 and 0.0 <= value <= 1.0, f"metric {key} = {value!r} is not a fraction in [0, 1]", path)
    _require(isinstance(data["per_query"], dict) and all(isinstance(v, list) for v in data["per_query"].values()),
             "per_query must map names to lists", path)
    _validate_per_query(metrics, data["per_query"], path)
    _require(isinstance(data["notes"], list) and all(isinstance(n, str) for n in data["notes"]),
             "notes must be a list of strings", path)
    _validate_provenance(data["provenance"], path)
    relative = _relative_path(data["dataset"], data["method"], data["weights"], data["config"])
    _require(path.parts[-3:] == relative.parts, f"the file belongs at <root>/{relative}", path)


def _validate_per_query(metrics: dict[str, Any], per_query: dict[str, list[Any]], path: Path) -> None:
    """Per-query values are well-formed (AP a fraction or null, a first hit a rank >= 1 or null), equally many,
    and agree with the metrics they average: mAP with the mean of the scored APs, Recall@N with the fraction of
    first hits at rank N or better."""
    lengths = {len(values) for values in per_query.values()}
    _require(len(lengths) <= 1, f"per_query lists have different lengths {sorted(lengths)}", path)
    for name, values in per_query.items():
        _require(bool(_PER_QUERY_KEY.match(name)), f"per_query key {name!r} is not like ap_medium or first_hit", path)
        rank = name == "first_hit"
        for i, v in enumerate(values):
            number = isinstance(v, int) if rank else isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1
            _require(v is None or (number and not isinstance(v, bool) and (not rank or v >= 1)),
                     f"per_query.{name}[{i}] = {v!r} is not {'a rank >= 1' if rank else 'a fraction in [0, 1]'} "
                     "or null", path)
    _require_complete(set(metrics), set(per_query), path)
    for key, value in metrics.items():
        head, _, setting = key.partition("_")
        if head == "map" and f"ap{_ + setting}" in per_query:
            scored = [v for v in per_query[f"ap{_ + setting}"] if v is not None]
            derived = math.fsum(scored) / len(scored) if scored else math.nan
        elif head.startswith("recall@") and "first_hit" in per_query and per_query["first_hit"]:
            n, hits = int(head[len("recall@"):]), per_query["first_hit"]
            derived = sum(h is not None and h <= n for h in hits) / len(hits)
        else:
            continue
        _require(abs(derived - value) <= AGREEMENT, f"metric {key} = {value!r} disagrees with its per-query values "
                 f"({derived!r}); the file was edited or damaged: re-run the evaluation", path)


def _require_complete(metrics: set[str], per_query: set[str], path: Path) -> None:
    """A metric key missing or extra: each per-query AP list has its mAP and the reverse, first hits have a
    Recall@N and the reverse, and every setting has the same mP@k cut-offs."""
    if not per_query:
        return
    for key in sorted(metrics | {f"m{name}" for name in per_query if name.startswith("ap")}):
        _require(not key.startswith("map") or (key in metrics and key[1:] in per_query),
                 f"metric {key} or its per-query values ap{key[3:]} missing; re-run the evaluation", path)
    recalls = {key for key in metrics if key.startswith("recall@")}
    _require(bool(recalls) == ("first_hit" in per_query), "Recall@N metrics and per_query.first_hit must come "
             "together; re-run the evaluation", path)
    cutoffs = {setting: sorted(key.partition("_")[0] for key in metrics
                               if key.startswith("mp@") and key.partition("_")[2] == setting)
               for setting in (key.partition("_")[2] for key in metrics if key.startswith("map"))}
    _require(len({tuple(c) for c in cutoffs.values()}) <= 1,
             f"mP@k cut-offs differ between settings ({cutoffs}); re-run the evaluation", path)


def _validate_provenance(prov: Any, path: Path) -> None:
    expected, optional = set(Provenance.__dataclass_fields__), {"trunk_initialisation"}
    _require(isinstance(prov, dict) and expected - optional <= set(prov) <= expected,
             f"provenance fields {sorted((set(prov or {}) ^ expected) - optional)} missing or unexpected", path)
    started = prov.get("trunk_initialisation")
    _require(started is None or (isinstance(started, dict) and isinstance(started.get("name"), str)),
             "provenance.trunk_initialisation must be null or name what training started from", path)
    _require(isinstance(prov["git_commit"], str) and isinstance(prov["git_dirty"], bool), "git state malformed", path)
    for key in ("weights_sha256", "dataset_manifest_sha256", "ground_truth_sha256", "descriptor_sha256"):
        value = prov[key]
        nullable = key != "ground_truth_sha256"
        _require((value is None and nullable) or (isinstance(value, str) and bool(SHA256_PATTERN.match(value))),
                 f"provenance.{key} must be a sha256 hex digest" + (" or null" if nullable else ""), path)
    _require(isinstance(prov["environment"], dict) and {"python", "torch", "device"} <= prov["environment"].keys(),
             "provenance.environment must name python, torch and device", path)
    try:
        stamp = datetime.fromisoformat(prov["date"])
    except (TypeError, ValueError):
        stamp = None
    _require(stamp is not None and stamp.tzinfo is not None, "provenance.date must be ISO 8601 with a time zone",
             path)
    _require(isinstance(prov["wall_time_s"], (int, float)) and prov["wall_time_s"] >= 0, "wall_time_s malformed",
             path)
    _require(isinstance(prov["command"], str) and bool(prov["command"]), "provenance.command must be given", path)
    _require(prov["seed"] is None or isinstance(prov["seed"], int), "seed must be an integer or null", path)
