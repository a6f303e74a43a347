"""What several command groups share: options, argument parsers, the dataset and device lookups, JSON output."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise click.BadParameter("cut-offs must be positive")
    return values


def print_json(payload: object) -> None:
    click.echo(json.dumps(payload, indent=2, allow_nan=False))


ROOT = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Data root (default: $BENCH_DATA, else ~/.cache/image-retrieval-benchmarks).")


RESULTS = click.option("--results", "results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                        default=None, help="Results to read (default: the repository's results/).")


REPORTED = click.option("--reported", "reported_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                         default=None, help="Reported numbers (default: paper_tables/reported/).")


def dataset_spec(name: str) -> Any:
    from datasets.names import dataset

    return dataset(name)


def device_for(requested: str | None) -> str:
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def compression_spec(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from benchmarks.evaluation.compression import Compression

    try:
        return None if value is None else str(Compression.parse(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def numbers(results_dir: Path | None, reported_dir: Path | None) -> tuple[list[Any], list[Any]]:
    from benchmarks.evaluation.results import RESULTS_DIR
    from benchmarks.reports.matching import load_results
    from benchmarks.reports.reported import REPORTED_DIR, load_all

    return load_all(reported_dir or REPORTED_DIR), load_results(results_dir or RESULTS_DIR)
