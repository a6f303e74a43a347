"""Reported numbers and results -> one long DataFrame (the tables, plots and checks read it).

Matching: a result reproduces a reported entry when method, dataset, protocol and metric key are equal, the
method's yaml has a ``reproductions`` item naming the result's weights whose variant the entry's variant holds
(:class:`benchmarks.reports.reported.Reproduction`), and, where the entry's variant says ``query_crop``, the result's
queries were cropped (or not) the same way. Deviations from the paper's protocol become numbered footnotes on
the reproduced number: those the reproduction declares, a backbone or descriptor dimension other than the
variant's, and uncropped queries on the revisited protocol. Reported values are percent as printed; results
hold fractions, converted in one place (:func:`percent`). Output is a function of its inputs only: rows in
file order, fixed decimals, no dates.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.evaluation.results import RunResult, load_result
from benchmarks.reports.reported import ReportedEntry, ReportedTable, Reproduction

COLUMNS = ("method", "table", "row", "setting", "variant", "weights", "dataset", "protocol", "metric", "reported",
           "reproduced", "difference", "tolerance", "confidence", "deviations", "provenance")
# Variant keys that say how a benchmark was run, not which model: the papers print them as columns.
COLUMN_KEYS: dict[str, dict[Any, str]] = {"query_crop": {True: "crop", False: "full"},
                                          "holidays_rotated": {True: "rot", False: "orig"}}
CONFIDENCE_MARKS = {"read_in_paper": "", "quoted_by_third_party": "q", "unverified": "u"}
_DIFFICULTY = {"easy": "E", "medium": "M", "hard": "H"}


def percent(fraction: float) -> float:
    """A result's metric (a fraction) on the papers' scale (percent): the only place the two meet."""
    return 100.0 * fraction


def load_results(root: Path) -> list[tuple[str, RunResult]]:
    """Every ``<dataset>/<method>/<weights>.json`` under ``root`` as (relative path, result), in path order."""
    return [(path.relative_to(root).as_posix(), load_result(path)) for path in sorted(root.glob("*/*/*.json"))]


def metric_label(metric: str) -> str:
    """``map_medium`` -> ``mAP M``, ``mp@10_hard`` -> ``mP@10 H``, ``recall@5`` -> ``R@5``, ``map`` -> ``mAP``."""
    name, _, difficulty = metric.partition("_")
    name = name.replace("recall@", "R@").replace("map", "mAP").replace("mp@", "mP@")
    return f"{name} {_DIFFICULTY[difficulty]}" if difficulty else name


def variant_text(variant: dict[str, Any]) -> str:
    """The whole variant as one canonical string (sorted keys)."""
    return ", ".join(f"{key}={_value(variant[key])}" for key in sorted(variant))


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def row_labels(entries: Sequence[ReportedEntry]) -> tuple[list[str], str]:
    """Each entry's row label in its table (the variant keys that differ between the table's rows, column keys
    aside) and the part shared by all rows."""
    keys = sorted({key for entry in entries for key in entry.variant if key not in COLUMN_KEYS})
    varying = [key for key in keys if len({_value(entry.variant.get(key)) for entry in entries}) > 1]
    shared = {key: entries[0].variant[key] for key in keys if key not in varying and key in entries[0].variant}
    labels = [", ".join(f"{key}={_value(entry.variant.get(key, '-'))}" for key in varying)
              or f"{entry.variant['backbone']}, {entry.variant['dimension']}-D" for entry in entries]
    return labels, variant_text(shared)


def _setting(variant: dict[str, Any]) -> str:
    """How the benchmark was run, from the variant's column keys: ``crop``, ``full``, ``rot``, ... or empty."""
    return ", ".join(names[variant[key]] for key, names in COLUMN_KEYS.items() if key in variant)


def with_setting(text: str, setting: str) -> str:
    return f"{text} ({setting})" if setting else text


def _deviations(entry: ReportedEntry, reproduction: Reproduction, result: RunResult) -> list[str]:
    found = list(reproduction.deviations)
    backbone = result.config.get("method", {}).get("backbone")
    if backbone is not None and backbone != entry.variant["backbone"]:
        found.append(f"backbone {backbone}, not the paper's {entry.variant['backbone']}")
    dimension = result.config.get("descriptor_dim")
    if dimension is not None and dimension != entry.variant["dimension"]:
        found.append(f"{dimension}-D descriptors, not the paper's {entry.variant['dimension']}-D")
    if result.protocol == "revisited" and "query_crop" not in entry.variant and not _queries_cropped(result):
        found.append("queries not cropped to their boxes (the revisited protocol crops them)")
    return found + protocol_departures(result)


def protocol_departures(result: RunResult) -> list[str]:
    """The test-protocol fields a result was extracted with that differ from its method's declaration (a
    ``train --protocol`` override, say), as ``"test protocol: max_size 128, not the method's 336"``. Mean and
    std go with the weights, not the protocol; a field the result does not record is not compared."""
    from methods import load_plugins
    from methods.base import ExtractionProtocol, protocol_changes

    methods = load_plugins()
    if result.method not in methods:
        return []
    declared = methods.get(result.method).protocol
    fields = {f.name for f in dataclasses.fields(ExtractionProtocol)} - {"mean", "std", "crop_queries"}
    recorded = {name: tuple(value) if isinstance(value, list) else value
                for name, value in result.config.get("protocol", {}).items() if name in fields}
    return [f"test protocol: {name} {_plain(value)}, not the method's {_plain(getattr(declared, name))}"
            for name, value in protocol_changes(dataclasses.replace(declared, **recorded), declared).items()]


def _plain(value: Any) -> str:
    """A protocol value as JSON reads it back (tuples as lists), printed with its floats shortened."""
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_plain(v) for v in value) + ")"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _queries_cropped(result: RunResult) -> bool | None:
    value = result.config.get("protocol", {}).get("queries_cropped")
    return None if value is None else bool(value)


def _reproduces(entry: ReportedEntry, reproduction: Reproduction, result: RunResult) -> bool:
    crop = entry.variant.get("query_crop")
    return (reproduction.weights == result.weights and reproduction.covers(entry)
            and (result.dataset, result.protocol) == (entry.dataset, entry.protocol) and entry.metric in result.metrics
            and (crop is None or _queries_cropped(result) == crop))


def _provenance(path: str, result: RunResult) -> str:
    dirty = "+dirty" if result.provenance.git_dirty else ""
    return f"results/{path} @ {result.provenance.git_commit[:12]}{dirty}"


def long_frame(reported: Iterable[ReportedTable], results: Sequence[tuple[str, RunResult]]) -> pd.DataFrame:
    """One row per (reported entry, result reproducing it), per entry nobody reproduced, and per metric of a
    result that reproduces no entry. ``reported``, ``reproduced`` and ``difference`` in points."""
    rows: list[dict[str, Any]] = []
    matched: set[tuple[int, str]] = set()
    for paper in reported:
        tables = entries_by_table(paper.entries)
        for table, entries in tables.items():
            labels, _ = row_labels(entries)
            for entry, label in zip(entries, labels, strict=True):
                base = {"method": paper.method, "table": table, "row": label, "setting": _setting(entry.variant),
                        "variant": variant_text(entry.variant),
                        "dataset": entry.dataset, "protocol": entry.protocol, "metric": entry.metric,
                        "reported": entry.value, "tolerance": entry.tolerance, "confidence": entry.confidence}
                found = [(i, path, result, reproduction) for i, (path, result) in enumerate(results)
                         if result.method == paper.method and (reproduction := next(
                             (r for r in paper.reproductions if _reproduces(entry, r, result)), None))]
                for i, path, result, reproduction in found:
                    matched.add((i, entry.metric))
                    value = percent(result.metrics[entry.metric])
                    rows.append({**base, "weights": result.weights, "reproduced": value,
                                 "difference": value - entry.value,
                                 "deviations": "; ".join(_deviations(entry, reproduction, result)),
                                 "provenance": _provenance(path, result)})
                if not found:
                    rows.append({**base, "weights": "", "reproduced": math.nan, "difference": math.nan,
                                 "deviations": "", "provenance": entry.source})
    for i, (path, result) in enumerate(results):
        for metric in sorted(result.metrics):
            if (i, metric) not in matched:
                rows.append({"method": result.method, "table": "", "row": result.weights, "setting": "", "variant": "",
                             "weights": result.weights, "dataset": result.dataset, "protocol": result.protocol,
                             "metric": metric, "reported": math.nan, "reproduced": percent(result.metrics[metric]),
                             "difference": math.nan, "tolerance": math.nan, "confidence": "", "deviations": "",
                             "provenance": _provenance(path, result)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def entries_by_table(entries: Iterable[ReportedEntry]) -> dict[str, list[ReportedEntry]]:
    tables: dict[str, list[ReportedEntry]] = {}
    for entry in entries:
        tables.setdefault(entry.table, []).append(entry)
    return tables
