"""``python -m benchmarks score``: rankings or features a user already has, scored with the suite's metrics."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from benchmarks.commands.options import int_list, print_json
from benchmarks.core.errors import InputError


@click.group()
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
@click.option("--kappas", default="1,5,10", show_default=True, callback=int_list, help="k of mP@k.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions).")
def score_revisited(gnd: Path, ranks: Path | None, features: Path | None, ranks_layout: str, protocol: str,
                    kappas: tuple[int, ...], as_json: bool) -> None:
    """mAP and mP@k: Easy / Medium / Hard (revisited) or the original Oxford/Paris protocol."""
    from benchmarks.evaluation import metrics
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
        print_json(payload if protocol == "revisited" else payload["oxford"])
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
    from benchmarks.evaluation.inputs import read_features, read_id_array
    from benchmarks.evaluation.search import rank_by_inner_product

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
@click.option("--n", "ns", default="1,5,10,20", show_default=True, callback=int_list, help="The N of Recall@N.")
@click.option("--panorama-size", type=click.IntRange(min=1), default=None,
              help="Collapse consecutive groups of this many database images into one panorama (Tokyo 24/7: 12).")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Distance in metres (default: the ground truth's posDistThr, 25 m).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions).")
def score_recall(gt: Path, predictions: Path, ns: tuple[int, ...], panorama_size: int | None,
                 threshold: float | None, as_json: bool) -> None:
    """Recall@N: a query counts when one of its first N predictions lies within the threshold."""
    from benchmarks.evaluation.inputs import read_id_array
    from benchmarks.evaluation.metrics import recall_at_n
    from datasets.formats import read_place_ground_truth

    ground_truth = read_place_ground_truth(gt, panorama_size)
    radius = ground_truth.threshold if threshold is None else threshold
    scores = recall_at_n(read_id_array(predictions), ground_truth.utm_queries, ground_truth.utm_db, radius, ns,
                         panorama_size, predictions)
    if as_json:
        print_json(scores.to_dict())
        return
    unit = f", panoramas of {panorama_size}" if panorama_size else ""
    click.echo(f"{gt.name}: {scores.n_queries} queries, {ground_truth.n_db} database images{unit}, {radius:g} m")
    for n in scores.ns:
        click.echo(f"  recall@{n:<4} {100 * scores.recall(n):6.2f}")
