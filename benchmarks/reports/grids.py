"""Grids: rows x (column group, metric) of reported / reproduced cells, rendered to Markdown and LaTeX."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from benchmarks.reports.latex import escape_tex, table_float
from benchmarks.reports.matching import CONFIDENCE_MARKS, entries_by_table, metric_label, row_labels, with_setting
from benchmarks.reports.reported import ReportedTable

MARK_TEXT = {"q": "quoted by a third party (read from a copy of the paper's table, not the paper itself)",
             "u": "unverified"}


@dataclass(frozen=True)
class Benchmark:
    """A combined table across methods: its file stem, title and (dataset, metric) columns; ``optional``
    datasets get columns only when some number exists for them."""

    name: str
    title: str
    metrics: dict[str, tuple[str, ...]]
    optional: tuple[str, ...] = ()


@dataclass
class Cell:
    reported: float | None = None
    confidence: str = ""
    reproduced: float | None = None
    notes: list[int] = field(default_factory=list)


@dataclass
class Grid:
    """A table: ``row_names`` name the label columns; ``columns`` are (group, metric) pairs."""

    title: str
    row_names: tuple[str, ...]
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: dict[tuple[str, ...], dict[tuple[str, str], Cell]] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cell(self, row: tuple[str, ...], column: tuple[str, str]) -> Cell:
        if column not in self.columns:
            self.columns.append(column)
        return self.rows.setdefault(row, {}).setdefault(column, Cell())

    def add(self, row: tuple[str, ...], column: tuple[str, str], record: pd.Series) -> None:
        cell = self.cell(row, column)
        if not pd.isna(record["reported"]):
            cell.reported, cell.confidence = float(record["reported"]), str(record["confidence"])
        if not pd.isna(record["reproduced"]):
            cell.reproduced = float(record["reproduced"])
            for text in filter(None, str(record["deviations"]).split("; ")):
                if text not in self.deviations:
                    self.deviations.append(text)
                cell.notes.append(self.deviations.index(text) + 1)


def _row_key(record: pd.Series) -> str:
    if not record["table"]:
        return str(record["weights"])
    return f"{record['row']} [{record['weights']}]" if record["weights"] else str(record["row"])


def paper_grids(frame: pd.DataFrame, paper: ReportedTable) -> list[Grid]:
    """One grid per table of the paper, in the paper's layout: rows = variants (with the weights reproducing
    them), columns = datasets (with column settings such as crop / full) x metrics."""
    grids = []
    for table, entries in entries_by_table(paper.entries).items():
        _, shared = row_labels(entries)
        grid = Grid(table, ("variant",), notes=[f"All rows: {shared}."] if shared else [])
        rows = frame[(frame["method"] == paper.method) & (frame["table"] == table)]
        for _, record in rows.iterrows():
            group = with_setting(str(record["dataset"]), str(record["setting"]))
            grid.add((_row_key(record),), (group, metric_label(record["metric"])), record)
        grids.append(grid)
    return grids


def benchmark_grid(frame: pd.DataFrame, benchmark: Benchmark) -> Grid:
    """Every method's numbers on the benchmark's (dataset, metric) columns: reported variants (labelled with their
    table) and our results, one row each."""
    grid = Grid(benchmark.title, ("method", "variant"))
    present = set(frame["dataset"])
    for dataset, metrics in benchmark.metrics.items():
        if dataset not in benchmark.optional or dataset in present:
            grid.columns += [(dataset, metric_label(metric)) for metric in metrics]
    wanted = {(d, m) for d, ms in benchmark.metrics.items() for m in ms}
    selected = frame[[(d, m) in wanted for d, m in zip(frame["dataset"], frame["metric"], strict=True)]]
    ours_only = selected["table"] == ""
    order = selected.assign(ours_only=ours_only, by=selected["weights"].where(ours_only, "")).sort_values(
        ["method", "ours_only", "by"], kind="stable")  # per method: reported rows in file order, then ours by weights
    for _, record in order.iterrows():
        label = with_setting(f"{record['table']}: {_row_key(record)}", str(record["setting"])) if record["table"] \
            else _row_key(record)
        grid.add((str(record["method"]), label), (str(record["dataset"]), metric_label(record["metric"])), record)
    return grid


def _number(value: float) -> str:
    return f"{value:.1f}"


def cell_text(cell: Cell, mark: Callable[[str], str], minus: str = "-") -> str:
    """``reported<mark> / reproduced<notes> (difference)``; either side alone where the other is missing."""
    parts = []
    if cell.reported is not None:
        confidence = CONFIDENCE_MARKS[cell.confidence]
        parts.append(_number(cell.reported) + (mark(confidence) if confidence else ""))
    if cell.reproduced is not None:
        notes = mark(",".join(map(str, cell.notes))) if cell.notes else ""
        ours = _number(cell.reproduced) + notes
        if cell.reported is not None:
            difference = round(cell.reproduced - cell.reported, 1) + 0.0  # + 0.0: no "-0.0"
            sign = "+" if difference >= 0 else minus
            ours += f" ({sign}{_number(abs(difference))})"
        parts.append(ours)
    return " / ".join(parts)


def _frame_of(grid: Grid, mark: Callable[[str], str], escape: Callable[[str], str], minus: str) -> pd.DataFrame:
    data = [[escape(part) for part in row] + [cell_text(cells[c], mark, minus) if c in cells else "" for c in
                                               grid.columns] for row, cells in grid.rows.items()]
    columns = [("", name) for name in grid.row_names] + [(escape(g), escape(m)) for g, m in grid.columns]
    return pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(columns))


def _footnotes(grid: Grid) -> list[str]:
    return [*grid.notes, *(f"{i}: {text}." for i, text in enumerate(grid.deviations, start=1))]


def grid_markdown(grid: Grid) -> str:
    if not grid.rows:
        return "No reported or reproduced numbers yet.\n"
    table = _frame_of(grid, lambda m: f"<sup>{m}</sup>", _escape_md, "-")
    header = [name if not group else f"{group} {name}" for group, name in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(grid.row_names)
                                                                + ["---:"] * len(grid.columns)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in _footnotes(grid))


def grid_latex(grid: Grid, label: str, caption: str) -> str:
    """The grid as a table float that fits the text width, its notes and the marks it uses below."""
    if not grid.rows:
        return f"% {escape_tex(caption)}: no reported or reproduced numbers yet.\n"
    used = {CONFIDENCE_MARKS[c.confidence] for cells in grid.rows.values() for c in cells.values()
            if c.reported is not None}
    marks = [f"{mark}: {text}." for mark, text in MARK_TEXT.items() if mark in used]
    return table_float(_frame_of(grid, lambda m: f"\\textsuperscript{{{m}}}", escape_tex, "$-$"),
                       len(grid.row_names), caption, label, [*_footnotes(grid), *marks])


def _escape_md(text: str) -> str:
    return text.replace("|", "\\|")
