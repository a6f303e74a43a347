"""Reported numbers as each paper prints them, from ``paper_tables/reported/<method>.yaml``: one entry per number
(percent) with table, variant, dataset, protocol, metric key, exact source and confidence; ``not_read`` says what
could not be read and why, ``notes`` keeps facts for reproduction; ``reproductions`` say which of our weights
reproduce which variant (see :class:`Reproduction`). Bad files are refused naming entry and field."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core.errors import InputError
from benchmarks.core.ids import NAME_PATTERN, WEIGHTS_NAME_PATTERN
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.core.strict_load import read_yaml
from benchmarks.evaluation.results import _METRIC_KEY, PROTOCOLS

REPORTED_DIR = REPO_ROOT / "paper_tables" / "reported"
CONFIDENCES = ("read_in_paper", "quoted_by_third_party", "unverified")
DEFAULT_TOLERANCE = 1.0  # points (percent)
_VARIANT_TYPES: dict[str, type] = {"backbone": str, "dimension": int, "training_set": str, "reranking": bool}
_ENTRY_FIELDS = ("table", "variant", "dataset", "protocol", "metric", "value", "source", "confidence")


@dataclass(frozen=True)
class Paper:
    """The publication the numbers come from; ``arxiv`` is an id such as ``1511.07247``."""

    title: str
    authors: tuple[str, ...]
    venue: str
    year: int
    arxiv: str


@dataclass(frozen=True)
class ReportedEntry:
    """One number as printed (percent; ``tolerance`` in points); ``variant`` holds at least ``_VARIANT_TYPES``."""

    table: str
    variant: dict[str, str | int | float | bool]
    dataset: str
    protocol: str
    metric: str
    value: float
    source: str
    confidence: str
    tolerance: float = DEFAULT_TOLERANCE
    note: str | None = None


@dataclass(frozen=True)
class Reproduction:
    """Our weights ``weights`` (a name as results record it) reproduce every entry whose variant holds all of
    ``variant``'s key/value pairs; ``deviations`` name known differences from the paper's protocol (each becomes a
    footnote on the reproduced numbers)."""

    weights: str
    variant: dict[str, str | int | float | bool]
    deviations: tuple[str, ...] = ()

    def covers(self, entry: ReportedEntry) -> bool:
        return all(key in entry.variant and entry.variant[key] == value for key, value in self.variant.items())


@dataclass(frozen=True)
class ReportedTable:
    """All the numbers one paper reports, with what could not be read, reproduction notes and the mapping from our
    weights to the paper's variants."""

    method: str
    paper: Paper
    entries: tuple[ReportedEntry, ...]
    not_read: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    reproductions: tuple[Reproduction, ...] = ()


def load_reported(path: str | Path) -> ReportedTable:
    """Read and validate one ``<method>.yaml``; raises :class:`InputError` naming the entry and field."""
    path = Path(path)
    data = read_yaml(path, "reported numbers")
    _check_keys(data, ("method", "paper", "entries"), ("not_read", "notes", "reproductions"), "the file", path)
    method, entries = data["method"], data["entries"]
    _require(isinstance(method, str) and bool(NAME_PATTERN.match(method)), "method must be a lowercase id", path)
    _require(method == path.stem, f"method {method!r} must equal the file name {path.stem!r}", path)
    _require(isinstance(entries, list) and bool(entries), "entries must be a non-empty list", path)
    parsed = tuple(_entry(item, f"entries[{i}]", path) for i, item in enumerate(entries))
    keys = [(e.table, tuple(sorted(e.variant.items())), e.dataset, e.protocol, e.metric) for e in parsed]
    for i, first in enumerate(keys.index(key) for key in keys):
        _require(first == i, f"entries[{i}] duplicates entry {first} (table, variant, dataset, protocol, metric)", path)
    _check_collisions(parsed, path)
    reproductions = data.get("reproductions", [])
    _require(isinstance(reproductions, list), "reproductions must be a list", path)
    return ReportedTable(method=method, paper=_paper(data["paper"], path), entries=parsed,
                         not_read=_strings(data.get("not_read", []), "not_read", path),
                         notes=_strings(data.get("notes", []), "notes", path),
                         reproductions=tuple(_reproduction(item, f"reproductions[{i}]", parsed, path)
                                             for i, item in enumerate(reproductions)))


def load_all(directory: str | Path = REPORTED_DIR) -> list[ReportedTable]:
    """Every ``*.yaml`` in ``directory``, validated, in file-name order."""
    return [load_reported(path) for path in sorted(Path(directory).glob("*.yaml"))]


def _check_collisions(entries: tuple[ReportedEntry, ...], path: Path) -> None:
    """Entries of different tables with the same variant, dataset, protocol and metric must print the same value:
    otherwise the variant lacks the field that tells the two settings apart (a result would match both)."""
    seen: dict[tuple[Any, ...], int] = {}
    for i, entry in enumerate(entries):
        key = (tuple(sorted(entry.variant.items())), entry.dataset, entry.protocol, entry.metric)
        first = seen.setdefault(key, i)
        other = entries[first]
        _require(other.value == entry.value,
                 f"entries[{i}] ({entry.table}, {entry.value:g}) and entries[{first}] ({other.table}, {other.value:g}) "
                 "have the same variant, dataset, protocol and metric but different values: add the field that "
                 "tells them apart to the variant", path)


def _require(condition: bool, message: str, path: Path) -> None:
    if not condition:
        raise InputError(f"invalid reported numbers: {message}", path)


def _check_keys(data: Any, required: tuple[str, ...], optional: tuple[str, ...], where: str, path: Path) -> None:
    _require(isinstance(data, dict), f"{where} must be a mapping", path)
    _require(not (missing := [k for k in required if k not in data]), f"{where} lacks {', '.join(missing)}", path)
    unknown = sorted(map(str, set(data) - set(required) - set(optional)))
    _require(not unknown, f"{where} has unknown field(s) {', '.join(unknown)}", path)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, where a bool passes only if bool is asked for (YAML reads ``true`` as one); floats must be finite."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    finite = not isinstance(value, float) or math.isfinite(value)
    return isinstance(value, kinds) and finite and (bool in kinds or not isinstance(value, bool))


def _text(value: Any, where: str, path: Path) -> str:
    _require(isinstance(value, str) and bool(value.strip()), f"{where} must be a non-empty string", path)
    return str(value)


def _strings(value: Any, where: str, path: Path) -> tuple[str, ...]:
    _require(isinstance(value, list), f"{where} must be a list of strings", path)
    return tuple(_text(item, f"{where}[{i}]", path) for i, item in enumerate(value))


def _paper(data: Any, path: Path) -> Paper:
    _check_keys(data, ("title", "authors", "venue", "year", "arxiv"), (), "paper", path)
    authors = _strings(data["authors"], "paper.authors", path)
    _require(bool(authors) and _is(data["year"], int), "paper.authors must be non-empty, paper.year an int", path)
    _require(isinstance(data["arxiv"], str) and bool(re.fullmatch(r"\d{4}\.\d{4,5}", data["arxiv"])),
             f"paper.arxiv {data['arxiv']!r} must be a quoted id like \"1511.07247\"", path)
    return Paper(title=_text(data["title"], "paper.title", path), authors=authors,
                 venue=_text(data["venue"], "paper.venue", path), year=data["year"], arxiv=data["arxiv"])


def _entry(data: Any, where: str, path: Path) -> ReportedEntry:
    _check_keys(data, _ENTRY_FIELDS, ("tolerance", "note"), where, path)
    variant, dataset, metric, value = data["variant"], data["dataset"], data["metric"], data["value"]
    _require(isinstance(variant, dict), f"{where}.variant must be a mapping", path)
    for key in [*_VARIANT_TYPES, *variant]:  # the required keys with their types, then every value a scalar
        kind = _VARIANT_TYPES.get(key, (str, int, float, bool))
        _require(_is(variant.get(key), kind), f"{where}.variant.{key} must be {getattr(kind, '__name__', 'a scalar')}",
                 path)
    _require(isinstance(dataset, str) and bool(NAME_PATTERN.match(dataset)), f"{where}.dataset must be an id", path)
    _require(data["protocol"] in PROTOCOLS, f"{where}.protocol must be one of {', '.join(PROTOCOLS)}", path)
    _require(isinstance(metric, str) and bool(_METRIC_KEY.match(metric)),
             f"{where}.metric {metric!r} is not like map_medium, mp@10_hard, recall@5", path)
    _require(_is(value, (int, float)) and 0 <= value <= 100, f"{where}.value must be a number in [0, 100]", path)
    _require(data["confidence"] in CONFIDENCES, f"{where}.confidence must be one of {', '.join(CONFIDENCES)}", path)
    tolerance, note = data.get("tolerance", DEFAULT_TOLERANCE), data.get("note")
    _require(_is(tolerance, (int, float)) and tolerance > 0, f"{where}.tolerance must be a positive number", path)
    return ReportedEntry(table=_text(data["table"], f"{where}.table", path), variant=dict(variant), dataset=dataset,
                         protocol=data["protocol"], metric=metric, value=float(value),
                         source=_text(data["source"], f"{where}.source", path), confidence=data["confidence"],
                         tolerance=float(tolerance), note=None if note is None else _text(note, f"{where}.note", path))


def _reproduction(data: Any, where: str, entries: tuple[ReportedEntry, ...], path: Path) -> Reproduction:
    _check_keys(data, ("weights", "variant"), ("deviations",), where, path)
    weights, variant = data["weights"], data["variant"]
    _require(isinstance(weights, str) and bool(WEIGHTS_NAME_PATTERN.match(weights)),
             f"{where}.weights must be a weights name 'arch.tag'", path)
    _require(isinstance(variant, dict) and bool(variant), f"{where}.variant must be a non-empty mapping", path)
    reproduction = Reproduction(weights=weights, variant=dict(variant),
                                deviations=_strings(data.get("deviations", []), f"{where}.deviations", path))
    _require(any(reproduction.covers(entry) for entry in entries),
             f"{where}.variant matches no entry's variant (its keys and values must appear in one)", path)
    return reproduction
