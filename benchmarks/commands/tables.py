"""``python -m benchmarks tables`` and ``check``: reported next to reproduced numbers, and what CI holds them to."""
from __future__ import annotations

from pathlib import Path

import click

from benchmarks.commands.options import REPORTED, RESULTS, numbers


@click.command("tables")
@click.option("--paper", default=None, help="Only this method's paper tables (netvlad, dolg, ...).")
@click.option("--benchmark", "benchmark_names", multiple=True,
              help="Only this combined table (revisited, places, classic, embedded). Repeatable.")
@click.option("--print", "show", is_flag=True, help="Also print the Markdown of the tables made.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the tables go (default: paper_tables/).")
@RESULTS
@REPORTED
def tables_command(paper: str | None, benchmark_names: tuple[str, ...], show: bool, out: Path | None,
                   results_dir: Path | None, reported_dir: Path | None) -> None:
    """Reported and reproduced numbers side by side: per paper in its own layout, and per benchmark across methods
    (Markdown and LaTeX, plus numbers.csv). Without --paper/--benchmark, stale generated files are removed."""
    from benchmarks.reports import tables

    reported, results = numbers(results_dir, reported_dir)
    known = {b.name for b in tables.benchmarks()}
    if paper is not None and paper not in {r.method for r in reported}:
        raise click.BadParameter(f"no reported numbers for {paper!r}", param_hint="--paper")
    if unknown := sorted(set(benchmark_names) - known):
        raise click.BadParameter(f"{unknown} not among {sorted(known)}", param_hint="--benchmark")
    everything = tables.generate(reported, results)
    wanted = {f"{paper}.md", f"{paper}.tex"} | {f"benchmark_{n}.{e}" for n in benchmark_names for e in ("md", "tex")}
    partial = paper is not None or bool(benchmark_names)
    files = {name: text for name, text in everything.items() if name in wanted} if partial else everything
    folder = out or tables.TABLES_DIR
    for path in tables.write_files(folder, files, prune=not partial):
        click.echo(f"{'wrote' if path.exists() else 'removed'} {path}", err=show)
    if show:
        for name in sorted(n for n in files if n.endswith(".md")):
            click.echo(files[name].partition("\n")[2])


@click.command("check")
@RESULTS
@REPORTED
@click.option("--tables", "tables_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Committed tables to compare with fresh ones (default: paper_tables/).")
@click.option("--rerun", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Results of a fresh run of the embedded benchmarks (make regression): each committed embedded "
                   "result must be there and agree within --regression-tolerance.")
@click.option("--regression-tolerance", type=click.FloatRange(min=0), default=None,
              help="Points per metric (default: benchmarks.reports.tables.REGRESSION_TOLERANCE).")
def check_command(results_dir: Path | None, reported_dir: Path | None, tables_dir: Path | None, rerun: Path | None,
                  regression_tolerance: float | None) -> None:
    """What CI runs on numbers: reproduced vs reported within each entry's tolerance, committed tables equal to
    fresh ones, and (with --rerun) the committed embedded results re-made. Exit code 1 on any failure."""
    import pandas as pd

    from benchmarks.evaluation.results import RESULTS_DIR
    from benchmarks.reports import matching, tables

    reported, results = numbers(results_dir, reported_dir)
    frame = matching.long_frame(reported, results)
    failures = 0
    missed = tables.out_of_tolerance(frame)
    compared = int(frame[["reported", "reproduced"]].notna().all(axis=1).sum())
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.2f}".format):
        if len(missed):
            failures += 1
            click.echo(f"{len(missed)} of {compared} reproduced numbers miss their reported value by more than the "
                       "tolerance (points):")
            click.echo(missed[["method", "table", "row", "weights", "dataset", "metric", "reported", "reproduced",
                               "difference", "tolerance"]].to_string(index=False))
        elif compared:
            click.echo(f"reported vs reproduced: {compared} numbers, all within tolerance")
        else:
            click.echo("reported vs reproduced: no result reproduces a reported number yet, nothing to hold to "
                       "tolerance (results/ holds the embedded runs; `reproduce` adds the papers' benchmarks)")
        stale = tables.stale_files(tables_dir or tables.TABLES_DIR, tables.generate(reported, results))
        if stale:
            failures += 1
            click.echo(f"generated tables differ from the committed ones: {', '.join(stale)} "
                       "(run `make tables` and commit)")
        else:
            click.echo("committed tables: up to date")
        if rerun is not None:
            tolerance = tables.REGRESSION_TOLERANCE if regression_tolerance is None else regression_tolerance
            moved = tables.regressions(results_dir or RESULTS_DIR, rerun, tolerance=tolerance)
            if len(moved):
                failures += 1
                click.echo(f"re-run of the embedded results: {len(moved)} problem(s), metrics moved by more than "
                           f"{tolerance:g} points or results not re-made:")
                click.echo(moved.to_string(index=False))
            else:
                click.echo(f"re-run of the embedded results: every metric within {tolerance:g} points")
    if failures:
        raise SystemExit(1)
