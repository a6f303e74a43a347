"""``python -m benchmarks reproduce``: a paper's table, everything it needs checked and fetched first."""
from __future__ import annotations

from pathlib import Path

import click

from benchmarks.commands.options import ROOT, device_for


@click.command("reproduce")
@click.argument("method")
@click.option("--r1m", is_flag=True, help="Add the +1M variants (the R1M distractors: about 1M images to fetch).")
@click.option("--weights", "weights", multiple=True, metavar="NAME|PATH",
              help="Weights to evaluate instead of the method's released ones. Repeatable.")
@click.option("--dataset", "datasets", multiple=True, help="Datasets instead of the paper's. Repeatable.")
@click.option("--crop-queries/--no-crop-queries", default=None,
              help="Crop queries to their boxes (default: as the method's protocol says; logged, recorded).")
@click.option("--results", "results_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results go (default: the repository's results/).")
@ROOT
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX",
              help="A copy laid out as the data root, tried first (URL_PREFIX/<dataset>/<file>). Repeatable.")
@click.option("--mirror-only", is_flag=True, help="Never try the official URLs.")
@click.option("--allow-insecure-http", is_flag=True,
              help="Accept files without a published checksum over plain http (R1M); their sha256 is then locked.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
@click.option("--allow-dirty", is_flag=True,
              help="Run although the suite has uncommitted changes (the results say so).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print what would be downloaded, trained and evaluated, with a time estimate on an H100, and exit "
                   "(nothing fetched or written).")
def reproduce_command(method: str, r1m: bool, weights: tuple[str, ...], datasets: tuple[str, ...],
                      crop_queries: bool | None, results_dir: Path | None, root: Path | None,
                      mirrors: tuple[str, ...], mirror_only: bool, allow_insecure_http: bool, batch_size: int,
                      device: str | None, allow_dirty: bool, plan_only: bool) -> None:
    """Reproduce METHOD's table: fetch what it needs (checked first), evaluate each weights on each dataset."""
    from benchmarks.core.acquire import AcquireOptions
    from benchmarks.core.data_root import data_root
    from benchmarks.evaluation.reproduce import ReproduceOptions, reproduce
    from benchmarks.evaluation.reproduce_plan import plan_lines
    from benchmarks.evaluation.results import RESULTS_DIR, record_dirty, require_clean_tree, write_result
    from methods import load_plugins

    if plan_only:
        return click.echo("\n".join(plan_lines(load_plugins().get(method), data_root(root))))
    require_clean_tree(allow_dirty)
    cls = load_plugins().get(method)
    options = ReproduceOptions(data_root=data_root(root), r1m=r1m, datasets=datasets, weights=weights,
                               crop_queries=crop_queries, batch_size=batch_size, device=device_for(device),
                               acquire=AcquireOptions(mirrors=mirrors, mirror_only=mirror_only,
                                                      allow_insecure_http=allow_insecure_http))
    for result in reproduce(cls, options):
        path = write_result(record_dirty(result, allow_dirty), results_dir or RESULTS_DIR)
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in result.metrics.items() if not k.startswith("mp@"))
        crop = "cropped" if result.config["protocol"]["queries_cropped"] else "whole"
        click.echo(f"{result.dataset} / {method} / {result.weights} (queries {crop}): {shown}  -> {path}")
