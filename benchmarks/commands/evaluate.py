"""``python -m benchmarks evaluate``: extract, search and score; a result with provenance."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from benchmarks.commands.options import ROOT, compression_spec, dataset_spec, device_for


@click.command("evaluate")
@click.option("--method", required=True)
@click.option("--weights", required=True, help="A weights name of the method, or the path of a checkpoint.")
@click.option("--dataset", "datasets", required=True, multiple=True, help="Repeatable.")
@click.option("--split", default=None, help="Default: the dataset's evaluation split.")
@click.option("--crop-queries/--no-crop-queries", default=None,
              help="Crop queries to their boxes (default: as the method's protocol says; recorded in the result).")
@click.option("--results", "results_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results go (default: the repository's results/, where a committed result is replaced "
                   "only with --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace a result committed in the default results/.")
@ROOT
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX", help="Tried first for weights files.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
@click.option("--compress", "compression", default=None, callback=compression_spec, metavar="SPEC",
              help="Search compact signatures: top256 (leading dimensions), pq32 (PQ, 32 bytes per image, "
                   "ADC), top512+pq64. Written to <weights>+SPEC.json.")
@click.option("--allow-dirty", is_flag=True,
              help="Run although the suite has uncommitted changes (the result says so).")
@click.option("--no-cache", is_flag=True, help="Extract in memory, without the descriptor cache under the data root.")
@click.option("--cache-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Storage of cached descriptors (float16 halves the cache; recorded in the result).")
@click.option("--on-bad-image", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="An unreadable image stops the run (fail) or is left out and recorded in the result (skip).")
def evaluate_command(method: str, weights: str, datasets: tuple[str, ...], split: str | None,
                     crop_queries: bool | None, results_dir: Path | None, overwrite: bool, root: Path | None,
                     mirrors: tuple[str, ...], batch_size: int, device: str | None, compression: str | None,
                     allow_dirty: bool, no_cache: bool, cache_dtype: str, on_bad_image: str) -> None:
    """Extract, search and score; writes results/<dataset>/<method>/<weights>.json with provenance.

    A result committed in results/ is not replaced unless --overwrite (or --results) says so: checked before any
    extraction where the weights name is known (a registered name, or a checkpoint with its .json), else before
    writing. Under torchrun each process extracts a share of the images into the cache and rank 0 writes the result.
    """
    import os

    from benchmarks.core.acquire import AcquireOptions
    from benchmarks.core.data_root import data_root
    from benchmarks.evaluation.evaluate import EvaluateOptions, evaluate
    from benchmarks.evaluation.results import (
        RESULTS_DIR,
        planned_path,
        record_dirty,
        refuse_committed,
        require_clean_tree,
        write_result,
    )
    from benchmarks.training.common import init_distributed
    from methods import load_plugins

    require_clean_tree(allow_dirty)
    cls = load_plugins().get(method)
    guarded = results_dir is None and not overwrite  # an explicit --results folder is the user's to replace
    planned = _planned_weights_name(cls, weights)
    if guarded and planned is not None:
        for name in datasets:
            refuse_committed(planned_path(RESULTS_DIR, dataset_spec(name).name, method, planned, compression))
    rank, world = init_distributed()
    chosen = device_for(device)
    if chosen == "cuda" and world > 1:  # one GPU per process
        chosen = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    options = EvaluateOptions(data_root=data_root(root), split=split, crop_queries=crop_queries,
                              batch_size=batch_size, device=chosen, acquire=AcquireOptions(mirrors=mirrors),
                              compression=compression, cache=not no_cache, cache_dtype=cache_dtype,
                              on_bad_image=on_bad_image)
    for name in datasets:
        result = record_dirty(evaluate(cls, weights, dataset_spec(name), options), allow_dirty)
        if rank != 0:
            continue
        if guarded:
            refuse_committed(RESULTS_DIR / result.relative_path())
        path = write_result(result, results_dir or RESULTS_DIR)
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in result.metrics.items() if not k.startswith("mp@"))
        click.echo(f"{result.dataset} / {method} / {result.weights}: {shown}  -> {path}")


def _planned_weights_name(cls: Any, weights: str) -> str | None:
    """The weights name a result of ``weights`` will carry, where known without loading them: a registered name,
    or the name in a checkpoint's ``.json`` beside it (None otherwise)."""
    if weights in cls.weights:
        return weights
    try:
        sidecar = json.loads(Path(f"{weights}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    named = isinstance(sidecar, dict) and sidecar.get("method") == cls.name and isinstance(sidecar.get("weights"), str)
    return sidecar["weights"] if named else None
