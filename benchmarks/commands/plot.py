"""``python -m benchmarks plot``: summary figures and ranked-list galleries as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from benchmarks.commands.options import REPORTED, RESULTS, ROOT, dataset_spec, device_for, numbers
from benchmarks.core.errors import InputError


@click.group("plot")
def plot() -> None:
    """Figures as PNG: Recall@N curves and mAP bars per benchmark, ranked-list galleries."""


@plot.command("summary")
@RESULTS
@REPORTED
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the PNGs (default: paper_tables/, next to the tables).")
@click.option("--dataset", "dataset_names", multiple=True, help="Only these datasets. Repeatable.")
def plot_summary(results_dir: Path | None, reported_dir: Path | None, out: Path | None,
                 dataset_names: tuple[str, ...]) -> None:
    """recall_<dataset>.png (Recall@N curves, methods overlaid) for place benchmarks and map_<dataset>.png (mAP
    bars: Easy / Medium / Hard, or the original Oxford/Paris protocol's one mAP) for the others; reported numbers
    are drawn beside ours."""
    from benchmarks.core.registry import did_you_mean
    from benchmarks.evaluation.results import RESULTS_DIR
    from benchmarks.reports import matching, plots, tables

    reported, results = numbers(results_dir, reported_dir)
    frame = matching.long_frame(reported, results)
    by_dataset: dict[str, list[Any]] = {}
    for _, result in results:
        by_dataset.setdefault(result.dataset, []).append(result)
    if unknown := sorted(set(dataset_names) - set(by_dataset)):
        raise InputError(f"--dataset {', '.join(unknown)}: no results for it here{did_you_mean(unknown[0], by_dataset)}"
                         f" (datasets with results: {', '.join(sorted(by_dataset)) or 'none'})",
                         results_dir or RESULTS_DIR)
    folder = out or tables.TABLES_DIR
    for name in sorted(set(dataset_names) or by_dataset):
        runs = by_dataset[name]
        if runs[0].protocol == "recall":
            path = plots.save(plots.recall_figure(name, runs, frame), folder / f"recall_{name}.png")
        else:
            path = plots.save(plots.map_figure(name, runs, frame), folder / f"map_{name}.png")
        click.echo(f"wrote {path}")


@plot.command("gallery")
@click.option("--method", required=True)
@click.option("--weights", required=True, help="A weights name of the method, or the path of a checkpoint.")
@click.option("--dataset", "dataset_name", required=True)
@click.option("--queries", "chosen", default="0,1,2", show_default=True,
              help="Query ids: 0-based positions in the dataset's query list, as `compare` prints them.")
@click.option("--top", type=click.IntRange(min=1, max=50), default=10, show_default=True)
@click.option("--setting", type=click.Choice(["easy", "medium", "hard"]), default="medium", show_default=True,
              help="Revisited difficulty that decides positive / junk frames.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@ROOT
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
def plot_gallery(method: str, weights: str, dataset_name: str, chosen: str, top: int, setting: str,
                 out: Path, root: Path | None, device: str | None) -> None:
    """Ranked lists: each chosen query and its top database images, framed green (positive), red (negative) or grey
    (junk); descriptors are extracted afresh as `evaluate` does."""
    from benchmarks.core.data_root import data_root
    from benchmarks.evaluation.evaluate import EvaluateOptions, extract_descriptors
    from benchmarks.reports import plots
    from methods import load_plugins

    try:
        indices = [int(v) for v in chosen.split(",")]
    except ValueError:
        raise click.BadParameter(f"{chosen!r} is not a comma-separated list of query ids", param_hint="--queries") \
            from None
    spec, folder_root = dataset_spec(dataset_name), data_root(root)
    loaded = spec.load(folder_root, None)
    n_queries = len(loaded.query_paths)
    if bad := [q for q in indices if not 0 <= q < n_queries]:  # before the minutes of extraction
        raise InputError(f"--queries {','.join(map(str, bad))}: {dataset_name} has {n_queries} queries (ids 0 to "
                         f"{n_queries - 1})")
    found = extract_descriptors(load_plugins().get(method), weights, spec,
                                EvaluateOptions(data_root=folder_root, device=device_for(device)), loaded)
    scored = f" ({setting})" if spec.protocol == "revisited" else ""
    title = f"{method} {found.weights.name} on {dataset_name}: top {top} per query{scored}"
    figure = plots.gallery_figure(found.loaded.db_paths, found.loaded.query_paths, found.loaded.ground_truth,
                                  found.db, found.queries, indices, found.queries_cropped, title, top, setting)
    click.echo(f"wrote {plots.save(figure, out)}")
