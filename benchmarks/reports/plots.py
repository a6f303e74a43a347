"""Figures (matplotlib, Agg, PNG without a timestamp): Recall@N curves and mAP bars per benchmark, with the
reported numbers beside ours, and ranked-list galleries (a query with its AP or first correct rank, and its
top-k framed green / red / grey for positive / negative / junk, each image with its file name). Figures are
built without pyplot (no global state, no display backend)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from benchmarks.evaluation.metrics import oxford_scores, recall_at_n, revisited_scores
from benchmarks.evaluation.results import RunResult
from benchmarks.evaluation.search import top_k_by_inner_product
from benchmarks.reports.matching import metric_label, percent
from datasets.base import GroundTruth, OxfordGroundTruth, PlaceGroundTruth, RevisitedGroundTruth, crop_query

FRAME_COLOURS = {"positive": "#1a9641", "negative": "#d7191c", "junk": "#999999"}
QUERY_COLOUR = "#2b83ba"
NAME_CHARS = 24  # file names under the images are cut in the middle beyond this
DIFFICULTIES = ("easy", "medium", "hard")
# One colour per method, the same in every figure whatever else is plotted; a method not listed gets one from its
# name. Its variants are lighter shades of it, reported values hatched.
METHOD_COLOURS = {"dolg": "#1b9e77", "gem": "#66a61e", "mscfp": "#d95f02", "netvlad": "#7570b3", "remap": "#e7298a"}
_SPARE_COLOURS = ("#a6761d", "#666666", "#1f78b4", "#b2df8a", "#fb9a99", "#e6ab02")
LINE_STYLES = ("-", "--", ":", "-.")


def method_colour(method: str, variant: int = 0) -> tuple[float, float, float]:
    """The method's colour, mixed with white by 0.35 per variant after the first (at most 0.7)."""
    spare = _SPARE_COLOURS[sum(method.encode()) % len(_SPARE_COLOURS)]
    colour = np.array(to_rgb(METHOD_COLOURS.get(method, spare)))
    mix = min(0.7, 0.35 * variant)
    return tuple(float(c) for c in colour + (1 - colour) * mix)  # type: ignore[return-value]


def _variant_index(results: Sequence[RunResult]) -> dict[tuple[str, str], int]:
    """(method, weights) -> its rank among that method's weights (sorted), for shades and line styles."""
    index: dict[tuple[str, str], int] = {}
    for result in sorted(results, key=lambda r: (r.method, r.weights)):
        index.setdefault((result.method, result.weights), sum(m == result.method for m, _ in index))
    return index


def _legend_outside(figure: Figure, axes: Axes) -> None:
    """The legend right of the axes, so it covers no bar or curve."""
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()


def save(figure: Figure, path: Path) -> Path:
    """PNG without the software/date metadata, so the same figure gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    return path


def recall_curve(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """(N, Recall@N in percent) for N = 1 .. the largest N the result scored, from its per-query first hits."""
    depth = max(int(key.split("@")[1]) for key in result.metrics if key.startswith("recall@"))
    ranks = np.array([np.inf if r is None else r for r in result.per_query["first_hit"]], dtype=np.float64)
    ns = np.arange(1, depth + 1)
    return ns, percent(1.0) * (ranks[None, :] <= ns[:, None]).mean(axis=1)


def _reported(frame: pd.DataFrame, dataset: str, metrics: Sequence[str]) -> pd.DataFrame:
    rows = frame[(frame["dataset"] == dataset) & frame["metric"].isin(metrics) & frame["reported"].notna()]
    return rows.drop_duplicates(["method", "table", "row", "setting", "metric"])


def _series_label(record: pd.Series) -> str:
    setting = f" ({record['setting']})" if record["setting"] else ""
    return f"{record['method']} {record['table']}: {record['row']}{setting}, reported"


def recall_figure(dataset: str, results: Sequence[RunResult], frame: pd.DataFrame) -> Figure:
    """Recall@N curves of every result on ``dataset``, with reported Recall@N values as markers."""
    figure = Figure(figsize=(9.0, 4.4))
    axes = figure.subplots()
    variants = _variant_index(results)
    for result in sorted(results, key=lambda r: (r.method, r.weights)):
        v = variants[(result.method, result.weights)]
        axes.plot(*recall_curve(result), marker=".", color=method_colour(result.method, v),
                  linestyle=LINE_STYLES[v % len(LINE_STYLES)], label=f"{result.method} {result.weights}")
    reported = _reported(frame, dataset, [m for m in frame["metric"].unique() if str(m).startswith("recall@")])
    for _, group in reported.groupby(["method", "table", "row", "setting"], sort=True):
        ns = [int(str(m).split("@")[1]) for m in group["metric"]]
        axes.plot(ns, group["reported"], linestyle="none", marker="x", markersize=8,
                  color=method_colour(str(group.iloc[0]["method"])), label=_series_label(group.iloc[0]))
    axes.set(xlabel="N (top-N predictions)", ylabel="Recall@N (%)", title=f"{dataset}: Recall@N", ylim=(0, 100))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    _legend_outside(figure, axes)
    return figure


def map_figure(dataset: str, results: Sequence[RunResult], frame: pd.DataFrame) -> Figure:
    """mAP bars of every result on ``dataset``: Easy / Medium / Hard (revisited) or the one ``map`` of the original
    Oxford/Paris protocol; reported values hatched."""
    revisited = any(r.protocol == "revisited" for r in results)
    metrics = [f"map_{d}" for d in DIFFICULTIES] if revisited else ["map"]
    variants = _variant_index(results)
    series: list[tuple[str, dict[str, float], bool, tuple[float, float, float]]] = [
        (f"{r.method} {r.weights}", {m: percent(r.metrics[m]) for m in metrics if m in r.metrics}, False,
         method_colour(r.method, variants[(r.method, r.weights)]))
        for r in sorted(results, key=lambda r: (r.method, r.weights))]
    reported = _reported(frame, dataset, metrics)
    for _, group in reported.groupby(["method", "table", "row", "setting"], sort=True):
        series.append((_series_label(group.iloc[0]),
                       {str(m): float(v) for m, v in zip(group["metric"], group["reported"], strict=True)}, True,
                       method_colour(str(group.iloc[0]["method"]))))
    figure = Figure(figsize=(9.0, 4.4))
    axes = figure.subplots()
    width = 0.8 / max(1, len(series))
    for i, (label, values, hatched, colour) in enumerate(series):
        xs = [metrics.index(m) + (i - (len(series) - 1) / 2) * width for m in values]
        bars = axes.bar(xs, list(values.values()), width, label=label, color=colour, edgecolor="white",
                        linewidth=0.3, hatch="//" if hatched else None)
        axes.bar_label(bars, fmt="%.0f", fontsize=5 if len(series) > 6 else 6, rotation=90, padding=1)
    axes.set_xticks(range(len(metrics)), [metric_label(m) for m in metrics])
    axes.set(ylabel="mAP (%)", title=f"{dataset}: mAP", ylim=(0, 105))
    _legend_outside(figure, axes)
    return figure


def frame_kinds(ground_truth: GroundTruth, query: int, ids: np.ndarray, setting: str = "medium") -> list[str]:
    """``positive`` / ``negative`` / ``junk`` for each database id in ``ids`` as the protocol scores ``query``:
    revisited per ``setting`` (easy: hard counts as junk; hard: easy counts as junk), original Oxford with its
    junk, places by distance within the threshold."""
    if isinstance(ground_truth, PlaceGroundTruth):
        distance = np.linalg.norm(ground_truth.utm_db[ids] - ground_truth.utm_queries[query], axis=1)
        return ["positive" if d <= ground_truth.threshold else "negative" for d in distance]
    if isinstance(ground_truth, RevisitedGroundTruth):
        easy, hard, junk = ground_truth.easy[query], ground_truth.hard[query], ground_truth.junk[query]
        positive = {"easy": easy, "medium": np.concatenate([easy, hard]), "hard": hard}[setting]
        ignored = {"easy": np.concatenate([junk, hard]), "medium": junk, "hard": np.concatenate([junk, easy])}[setting]
    elif isinstance(ground_truth, OxfordGroundTruth):
        positive, ignored = ground_truth.positives[query], ground_truth.junk[query]
    else:
        raise TypeError(f"no queries to show in ground truth of type {type(ground_truth).__name__}")
    return ["positive" if i in positive else "junk" if i in ignored else "negative" for i in ids.tolist()]


def row_scores(ground_truth: GroundTruth, ranks: np.ndarray, chosen: Sequence[int], setting: str = "medium"
               ) -> list[str]:
    """Each chosen query's score from its ranking of the whole database (``ranks``: (len(chosen), n_db)), as the
    protocol scores it: AP in ``setting`` (revisited), AP (original Oxford/Paris) or the first correct rank."""
    def pick(lists: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [lists[q] for q in chosen]

    n_db = ranks.shape[1]
    if isinstance(ground_truth, PlaceGroundTruth):
        first = recall_at_n(ranks, ground_truth.utm_queries[list(chosen)], ground_truth.utm_db,
                            ground_truth.threshold, (1,), ground_truth.panorama_size).first_hit
        return [f"first hit #{rank}" if rank else "no positive" for rank in first.tolist()]
    if isinstance(ground_truth, RevisitedGroundTruth):
        ap = revisited_scores(ranks, pick(ground_truth.easy), pick(ground_truth.hard), pick(ground_truth.junk),
                              n_db)[setting].ap
    elif isinstance(ground_truth, OxfordGroundTruth):
        ap = oxford_scores(ranks, pick(ground_truth.positives), pick(ground_truth.junk), n_db).ap
    else:
        raise TypeError(f"no queries to score in ground truth of type {type(ground_truth).__name__}")
    return ["no positive" if np.isnan(value) else f"AP {100 * value:.1f}" for value in ap]


def gallery_figure(db_paths: Sequence[Path], query_paths: Sequence[Path], ground_truth: GroundTruth,
                   db: np.ndarray, queries: np.ndarray, chosen: Sequence[int], cropped: bool, title: str,
                   top: int = 10, setting: str = "medium") -> Figure:
    """One row per chosen query: the query (as the method saw it) with its score (:func:`row_scores`) and its
    ``top`` database images, framed, each with its file name."""
    from benchmarks.evaluation.extract import as_rgb  # torch: only galleries need it

    boxes = getattr(ground_truth, "query_boxes", None)
    ranks = top_k_by_inner_product(queries[list(chosen)], db, len(db))
    scores = row_scores(ground_truth, ranks, chosen, setting)
    figure = Figure(figsize=(1.3 * (top + 1), 1.5 * len(chosen) + 0.5))
    grid = figure.subplots(len(chosen), top + 1, squeeze=False)
    for row, (query, ids, score) in enumerate(zip(chosen, ranks[:, :top], scores, strict=True)):
        image = as_rgb(Image.open(query_paths[query]), query_paths[query])
        if cropped and boxes is not None:
            image = crop_query(image, boxes[query])
        _panel(grid[row, 0], image, f"query {query}: {score}", QUERY_COLOUR, query_paths[query].name)
        for rank, (db_id, kind) in enumerate(zip(ids, frame_kinds(ground_truth, query, ids, setting), strict=True)):
            _panel(grid[row, rank + 1], as_rgb(Image.open(db_paths[db_id]), db_paths[db_id]), f"#{rank + 1}",
                   FRAME_COLOURS[kind], db_paths[db_id].name)
    colours = {"query": QUERY_COLOUR, **FRAME_COLOURS}
    handles = [Rectangle((0, 0), 1, 1, facecolor="none", edgecolor=c, linewidth=3) for c in colours.values()]
    figure.legend(handles, list(colours), loc="upper right", ncol=len(colours), fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=9, x=0.01, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    return figure


def _panel(axes: Axes, image: Image.Image, caption: str, colour: str, name: str) -> None:
    axes.imshow(np.asarray(image))
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    axes.set_title(caption, fontsize=7)
    half = NAME_CHARS // 2 - 1
    axes.set_xlabel(name if len(name) <= NAME_CHARS else f"{name[:half]}..{name[-half:]}", fontsize=5)
