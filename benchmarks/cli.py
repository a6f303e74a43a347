"""The command-line interface: ``python -m benchmarks --help``.

Bad input (an :class:`InputError`) prints one line, ``error: <file>: <problem>``, and exits with code 2.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.errors import InputError


class _Group(click.Group):
    """The top group: an :class:`InputError` from any subcommand becomes one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InputError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise click.BadParameter("cut-offs must be positive")
    return values


def _print_json(payload: object) -> None:
    click.echo(json.dumps(payload, indent=2, allow_nan=False))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Reproducible benchmarks for image retrieval and visual place recognition."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_plugins(as_json: bool) -> None:
    """Registered methods and datasets, with one-line descriptions."""
    from datasets import DATASETS
    from methods import load_plugins

    methods = {name: cls.description for name, cls in load_plugins().items()}
    datasets = {name: cls.description for name, cls in DATASETS.items()}
    if as_json:
        _print_json({"methods": methods, "datasets": datasets})
        return
    for title, entries in (("methods", methods), ("datasets", datasets)):
        click.echo(f"{title}:")
        for name, description in entries.items():
            click.echo(f"  {name:<14} {description}")
        if not entries:
            click.echo("  (none registered yet)")


@cli.group()
def score() -> None:
    """Score rankings or features you already have, with the suite's metrics."""


@score.command("revisited")
@click.option("--gnd", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Ground-truth pickle: gnd_roxford5k.pkl, gnd_rparis6k.pkl (gnd_oxford5k.pkl for --protocol oxford).")
@click.option("--ranks", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=".npy of 0-based database ids, best first: (n_queries, k), k may be < n_db.")
@click.option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead of --ranks: .npz (db (n_db, D), queries (n_q, D)) or revisitop's .mat (X, Q); "
                   "ranked by inner product, ties by database index.")
@click.option("--ranks-layout", type=click.Choice(["query-major", "db-major"]), default="query-major",
              show_default=True, help="db-major reads revisitop's (n_db, n_queries) layout.")
@click.option("--protocol", type=click.Choice(["revisited", "oxford"]), default="revisited", show_default=True,
              help="oxford: the original protocol (good + ok positive, junk ignored).")
@click.option("--kappas", default="1,5,10", show_default=True, callback=_int_list, help="k of mP@k.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions).")
def score_revisited(gnd: Path, ranks: Path | None, features: Path | None, ranks_layout: str, protocol: str,
                    kappas: tuple[int, ...], as_json: bool) -> None:
    """mAP and mP@k: Easy / Medium / Hard (revisited) or the original Oxford/Paris protocol."""
    from benchmarks import metrics
    from datasets.base import OxfordGroundTruth, RevisitedGroundTruth
    from datasets.formats import read_oxford_gnd, read_revisited_gnd

    ground_truth: RevisitedGroundTruth | OxfordGroundTruth
    ground_truth = read_revisited_gnd(gnd) if protocol == "revisited" else read_oxford_gnd(gnd)
    ids, source = _ranking(ranks, features, ranks_layout, ground_truth.n_db, ground_truth.n_queries)
    if isinstance(ground_truth, RevisitedGroundTruth):
        scores = metrics.revisited_scores(ids, ground_truth.easy, ground_truth.hard, ground_truth.junk,
                                          ground_truth.n_db, kappas, source)
    else:
        scores = {"oxford": metrics.oxford_scores(ids, ground_truth.positives, ground_truth.junk,
                                                  ground_truth.n_db, kappas, source)}
    if as_json:
        payload = {name: s.to_dict() for name, s in scores.items()}
        _print_json(payload if protocol == "revisited" else payload["oxford"])
        return
    click.echo(f"{gnd.name}: {ground_truth.n_queries} queries, {ground_truth.n_db} database images, "
               f"ranking depth {ids.shape[1]}")
    header = ["setting", "mAP", *(f"mP@{k}" for k in kappas), "queries"]
    click.echo("  ".join(f"{h:>8}" for h in header))
    for name, s in scores.items():
        cells = [f"{100 * s.map:8.2f}", *(f"{100 * s.mp(k):8.2f}" for k in kappas), f"{s.n_queries:8d}"]
        click.echo("  ".join([f"{name:>8}", *cells]))
    click.echo("(percentages; queries without positives are excluded from the means)")


def _ranking(ranks: Path | None, features: Path | None, layout: str, n_db: int, n_queries: int
             ) -> tuple[np.ndarray, Path]:
    """(n_queries, k) database ids from --ranks (in either layout) or --features, and the file they came from."""
    from benchmarks.inputs import read_features, read_id_array
    from benchmarks.search import rank_by_inner_product

    if ranks is not None and features is None:
        ids = read_id_array(ranks)
        if layout == "db-major" and ids.ndim == 2:
            return ids.T, ranks
        if ids.ndim == 2 and ids.shape[0] != n_queries == ids.shape[1]:
            raise InputError(f"shape {ids.shape} looks like revisitop's (n_db, n_queries) layout: add "
                             "--ranks-layout db-major", ranks)
        return ids, ranks
    if features is not None and ranks is None:
        db, queries = read_features(features)
        if db.shape[0] != n_db:
            raise InputError(f"{db.shape[0]} database descriptors but the ground truth lists {n_db}", features)
        return rank_by_inner_product(queries, db), features
    raise click.UsageError("give exactly one of --ranks and --features")


@score.command("recall")
@click.option("--gt", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="NetVLAD dbStruct .mat, or .npz with utmDb, utmQ, posDistThr.")
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help=".npy (n_queries, k) of 0-based database ids, best first.")
@click.option("--n", "ns", default="1,5,10,20", show_default=True, callback=_int_list, help="The N of Recall@N.")
@click.option("--panorama-size", type=click.IntRange(min=1), default=None,
              help="Collapse consecutive groups of this many database images into one panorama (Tokyo 24/7: 12).")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Distance in metres (default: the ground truth's posDistThr, 25 m).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions).")
def score_recall(gt: Path, predictions: Path, ns: tuple[int, ...], panorama_size: int | None,
                 threshold: float | None, as_json: bool) -> None:
    """Recall@N: a query counts when one of its first N predictions lies within the threshold."""
    from benchmarks.inputs import read_id_array
    from benchmarks.metrics import recall_at_n
    from datasets.formats import read_place_ground_truth

    ground_truth = read_place_ground_truth(gt, panorama_size)
    radius = ground_truth.threshold if threshold is None else threshold
    scores = recall_at_n(read_id_array(predictions), ground_truth.utm_queries, ground_truth.utm_db, radius, ns,
                         panorama_size, predictions)
    if as_json:
        _print_json(scores.to_dict())
        return
    unit = f", panoramas of {panorama_size}" if panorama_size else ""
    click.echo(f"{gt.name}: {scores.n_queries} queries, {ground_truth.n_db} database images{unit}, {radius:g} m")
    for n in scores.ns:
        click.echo(f"  recall@{n:<4} {100 * scores.recall(n):6.2f}")


@cli.group()
def speed() -> None:
    """Speed benchmarks: figures with the machine and versions that produced them."""


@speed.command("metrics")
@click.option("--n-db", type=click.IntRange(min=5000), default=1_001_001, show_default=True,
              help="Database size of the revisited case (ROxford5k + 1M distractors).")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Best of this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def speed_metrics(n_db: int, repeat: int, as_json: bool) -> None:
    """Scoring 70 queries against a 1M-image ranking, and Recall@N at Pitts250k scale."""
    from benchmarks.speed.metrics import run as run_metrics

    figures: dict[str, Any] = run_metrics(n_db=n_db, repeat=repeat)
    if as_json:
        _print_json(figures)
        return
    rev, rec = figures["revisited"], figures["recall"]
    click.echo(f"revisited mAP/mP@k, {rev['n_queries']} queries x {rev['n_db']:,} ranked: {rev['seconds']:.3f} s")
    click.echo(f"recall@N, {rec['n_queries']} queries x top-{rec['k']} of {rec['n_db']:,}: {rec['seconds']:.3f} s")
    env = figures["environment"]
    click.echo(f"(best of {repeat}; python {env['python']}, numpy {env['numpy']}, {env['platform']})")


def main() -> None:
    cli(prog_name="python -m benchmarks")
