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

from benchmarks.cli_extract import extract_command
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
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if verbose else logging.WARNING)  # CPU-feature probing


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_plugins(as_json: bool) -> None:
    """Registered methods and datasets, with one-line descriptions."""
    from datasets import load_plugins as load_datasets
    from methods import load_plugins

    methods = {name: cls.description for name, cls in load_plugins().items()}
    datasets = {name: cls.description for name, cls in load_datasets().items()}
    if as_json:
        _print_json({"methods": methods, "datasets": datasets})
        return
    for title, entries in (("methods", methods), ("datasets", datasets)):
        click.echo(f"{title}:")
        for name, description in entries.items():
            click.echo(f"  {name:<16} {description}")
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


_ROOT = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Data root (default: $BENCH_DATA, else ~/.cache/image-retrieval-benchmarks).")


def _dataset(name: str) -> Any:
    from datasets import dataset

    return dataset(name)


@cli.group()
def data() -> None:
    """Download, verify and describe datasets (all under one data root, never in the repository)."""


@data.command("download")
@click.argument("name")
@_ROOT
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX",
              help="A local copy tried before the official URLs, laid out as the data root: "
                   "URL_PREFIX/<dataset>/<file>. Repeatable.")
@click.option("--mirror-only", is_flag=True, help="Never try the official URLs (machines without internet).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where images given out on request already are (Pittsburgh, Tokyo 24/7): linked, then checked.")
@click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True, help="Parallel downloads.")
@click.option("--keep-archives", is_flag=True, help="Keep archives after unpacking (to serve as a mirror).")
@click.option("--retries", type=click.IntRange(min=1), default=5, show_default=True,
              help="Tries per source without progress before moving to the next source.")
@click.option("--archives", default=None, metavar="RANGES",
              help="Only these of a dataset's numbered archives, e.g. 0-9,42 (gldv2: 0-499; default: all).")
@click.option("--allow-insecure-http", is_flag=True,
              help="Accept files without a published checksum over plain http (R1M); their sha256 is then locked.")
def data_download(name: str, root: Path | None, mirrors: tuple[str, ...], mirror_only: bool, images: Path | None,
                  jobs: int, keep_archives: bool, retries: int, archives: str | None,
                  allow_insecure_http: bool) -> None:
    """Fetch (or generate) dataset NAME: resumable, verified, unpacked safely."""
    from benchmarks.data_root import data_root
    from benchmarks.download import Retry
    from datasets.acquire import AcquireOptions, parse_archive_ranges

    spec, folder_root = _dataset(name), data_root(root)
    options = AcquireOptions(mirrors=mirrors, mirror_only=mirror_only, jobs=jobs, keep_archives=keep_archives,
                             retry=Retry(attempts=retries), images=images,
                             archives=None if archives is None else parse_archive_ranges(archives),
                             allow_insecure_http=allow_insecure_http)
    spec.prepare(folder_root, options)
    click.echo(f"{name}: ready under {spec.folder(folder_root)}; check it with "
               f"`python -m benchmarks data verify {name}`")


@data.command("verify")
@click.argument("name")
@_ROOT
def data_verify(name: str, root: Path | None) -> None:
    """Re-check counts, ground truth and every image of NAME; lists each problem (exit code 1 if any)."""
    from benchmarks.data_root import data_root

    spec = _dataset(name)
    problems = spec.check(data_root(root))
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        click.echo(f"{name}: {len(problems)} problem(s)")
        raise SystemExit(1)
    click.echo(f"{name}: sound")


def _checksum_state(spec: Any, locked: str | None) -> str:
    if spec.manual:
        return "given out on request"
    if spec.sha256:
        return "published"
    return "locked at first download" if locked else "none published; recorded at first download"


@data.command("info")
@click.argument("name")
@_ROOT
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_info(name: str, root: Path | None, as_json: bool) -> None:
    """What NAME is, its protocol, files (URLs, checksums, state) and, once there, its counts."""
    from benchmarks.data_root import data_root
    from datasets.acquire import ChecksumLock, is_acquired

    spec, folder_root = _dataset(name), data_root(root)
    folder = spec.folder(folder_root)
    lock = ChecksumLock(folder)
    files = [{"name": f.name, "urls": list(f.urls), "manual": f.manual,
              "sha256": f.sha256 or lock.sha256(f.name),
              "checksum": _checksum_state(f, lock.sha256(f.name)),
              "acquired": is_acquired(folder, f)} for f in spec.files]
    info = {"name": name, "description": spec.description, "protocol": str(spec.protocol),
            "splits": list(spec.splits), "requires": list(spec.requires), "folder": str(folder),
            "files": files, **spec.summary(folder_root)}
    if as_json:
        _print_json(info)
        return
    for key, value in info.items():
        if key == "files":
            acquired = sum(f["acquired"] for f in files)
            click.echo(f"files: {acquired} of {len(files)} acquired" if files else "files: none to download")
            for f in files[:6]:
                mark = "x" if f["acquired"] else " "
                click.echo(f"  [{mark}] {f['name']}  sha256: {f['checksum']}  {(f['urls'] or [''])[0]}")
            if len(files) > 6:
                click.echo(f"  ... and {len(files) - 6} more (--json lists them all)")
        else:
            click.echo(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def _device(requested: str | None) -> str:
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


@cli.command("train")
@click.argument("method")
@click.option("--dataset", required=True, help="A dataset with a training split (synth_places, pitts30k, ...).")
@click.option("--split", default="train", show_default=True)
@click.option("--val-split", default=None,
              help="Validate after each epoch on this split (recall@5) and keep the best epoch's weights, as NetVLAD.")
@click.option("--steps", type=click.IntRange(min=0), required=True,
              help="Optimiser steps (0: only the initialisation and the fitted parts, an untrained baseline).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", "config_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's Config (backbone=resnet18, num_clusters=16). Repeatable.")
@click.option("--set", "recipe_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's training recipe (lr=0.01, cache_refresh=50). Repeatable.")
@click.option("--name", required=True, help="Weights name, arch.tag (resnet18.synth_places).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Checkpoint to write.")
@click.option("--init", default=None, metavar="NAME|PATH|none",
              help="The trunk's initialisation (default: the recipe's, e.g. ImageNet VGG-16 for NetVLAD; "
                   "efficientnet_lite0.in1k works offline; none: timm's random trunk).")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX", help="Tried first for the initialisation.")
@_ROOT
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
def train_command(method: str, dataset: str, split: str, val_split: str | None, steps: int, seed: int,
                  config_pairs: tuple[str, ...], recipe_pairs: tuple[str, ...], name: str, out: Path,
                  init: str | None, mirrors: tuple[str, ...], root: Path | None, device: str | None) -> None:
    """Train METHOD on a dataset's training split from its recipe's initialisation; resumable (OUT.state), runs
    under torchrun as well."""
    import dataclasses

    from benchmarks.data_root import data_root
    from benchmarks.ids import WEIGHTS_NAME_PATTERN
    from benchmarks.initialise import settle
    from datasets.acquire import AcquireOptions
    from methods import load_plugins
    from methods.base import parse_overrides
    from methods.initialisation import load_initialisation
    from methods.train_common import TrainOptions, init_distributed
    from methods.training import train_model
    from methods.weights import save_checkpoint

    cls = load_plugins().get(method)
    default_recipe = getattr(cls, "recipe", None)
    if default_recipe is None:
        raise click.UsageError(f"{method} has no training recipe in this suite")
    if not WEIGHTS_NAME_PATTERN.match(name):
        raise click.BadParameter(f"{name!r} is not 'arch.tag' in lowercase (e.g. resnet18.synth_places)",
                                 param_hint="--name")
    try:
        overrides = parse_overrides(cls.config_class, config_pairs)
        recipe_overrides = parse_overrides(type(default_recipe), recipe_pairs)
        dataclasses.replace(default_recipe, **recipe_overrides)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    import torch

    spec, folder_root = _dataset(dataset), data_root(root)
    start = settle(cls, init, overrides, folder_root, AcquireOptions(mirrors=mirrors))
    try:
        config = cls.config_class(**start.config_values)
    except (TypeError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    recipe = dataclasses.replace(default_recipe, **{**cls.recipe_for_trunk(config.backbone), **recipe_overrides})
    torch.manual_seed(seed)  # the random initialisation of whatever the method does not load or fit
    model = cls(config)
    if start.initialisation is not None:
        load_initialisation(model, start.initialisation)
    state = Path(f"{out}.state")
    validation = None if val_split is None else spec.load(folder_root, val_split)
    report = train_model(model, spec.load(folder_root, split), recipe,
                         TrainOptions(steps=steps, seed=seed, device=_device(device), state=state,
                                      validation=validation))
    if init_distributed()[0] != 0:
        return
    digest = save_checkpoint(out, model.cpu(), name, {
        "trained_on": {"dataset": dataset, "split": split}, "recipe": dataclasses.asdict(recipe),
        "trunk_initialisation": start.record(), **report})
    state.unlink(missing_ok=True)
    click.echo(f"{out}: {method} {name}, sha256 {digest}")


def _compression(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from benchmarks.compression import Compression

    try:
        return None if value is None else str(Compression.parse(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command("evaluate")
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
@_ROOT
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX", help="Tried first for weights files.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
@click.option("--compress", "compression", default=None, callback=_compression, metavar="SPEC",
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

    from benchmarks.data_root import data_root
    from benchmarks.evaluate import EvaluateOptions, evaluate
    from benchmarks.results import (RESULTS_DIR, planned_path, record_dirty, refuse_committed, require_clean_tree,
                                    write_result)
    from datasets.acquire import AcquireOptions
    from methods import load_plugins
    from methods.train_common import init_distributed

    require_clean_tree(allow_dirty)
    cls = load_plugins().get(method)
    guarded = results_dir is None and not overwrite  # an explicit --results folder is the user's to replace
    planned = _planned_weights_name(cls, weights)
    if guarded and planned is not None:
        for name in datasets:
            refuse_committed(planned_path(RESULTS_DIR, _dataset(name).name, method, planned, compression))
    rank, world = init_distributed()
    chosen = _device(device)
    if chosen == "cuda" and world > 1:  # one GPU per process
        chosen = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    options = EvaluateOptions(data_root=data_root(root), split=split, crop_queries=crop_queries,
                              batch_size=batch_size, device=chosen, acquire=AcquireOptions(mirrors=mirrors),
                              compression=compression, cache=not no_cache, cache_dtype=cache_dtype,
                              on_bad_image=on_bad_image)
    for name in datasets:
        result = record_dirty(evaluate(cls, weights, _dataset(name), options), allow_dirty)
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

_RESULTS = click.option("--results", "results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                        default=None, help="Results to read (default: the repository's results/).")
_REPORTED = click.option("--reported", "reported_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                         default=None, help="Reported numbers (default: paper_tables/reported/).")


def _numbers(results_dir: Path | None, reported_dir: Path | None) -> tuple[list[Any], list[Any]]:
    from benchmarks.reported import REPORTED_DIR, load_all
    from benchmarks.results import RESULTS_DIR
    from benchmarks.tables import load_results

    return load_all(reported_dir or REPORTED_DIR), load_results(results_dir or RESULTS_DIR)


@cli.command("tables")
@click.option("--paper", default=None, help="Only this method's paper tables (netvlad, dolg, ...).")
@click.option("--benchmark", "benchmark_names", multiple=True,
              help="Only this combined table (revisited, places, classic, embedded). Repeatable.")
@click.option("--print", "show", is_flag=True, help="Also print the Markdown of the tables made.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the tables go (default: paper_tables/).")
@_RESULTS
@_REPORTED
def tables_command(paper: str | None, benchmark_names: tuple[str, ...], show: bool, out: Path | None,
                   results_dir: Path | None, reported_dir: Path | None) -> None:
    """Reported and reproduced numbers side by side: per paper in its own layout, and per benchmark across methods
    (Markdown and LaTeX, plus numbers.csv). Without --paper/--benchmark, stale generated files are removed."""
    from benchmarks import tables

    reported, results = _numbers(results_dir, reported_dir)
    known = {b.name for b in tables.BENCHMARKS}
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


@cli.command("check")
@_RESULTS
@_REPORTED
@click.option("--tables", "tables_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Committed tables to compare with fresh ones (default: paper_tables/).")
@click.option("--rerun", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Results of a fresh run of the embedded benchmarks (make regression): each committed embedded "
                   "result must be there and agree within --regression-tolerance.")
@click.option("--regression-tolerance", type=click.FloatRange(min=0), default=None,
              help="Points per metric (default: benchmarks.tables.REGRESSION_TOLERANCE).")
def check_command(results_dir: Path | None, reported_dir: Path | None, tables_dir: Path | None, rerun: Path | None,
                  regression_tolerance: float | None) -> None:
    """What CI runs on numbers: reproduced vs reported within each entry's tolerance, committed tables equal to
    fresh ones, and (with --rerun) the committed embedded results re-made. Exit code 1 on any failure."""
    import pandas as pd

    from benchmarks import tables
    from benchmarks.results import RESULTS_DIR

    reported, results = _numbers(results_dir, reported_dir)
    frame = tables.long_frame(reported, results)
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


@cli.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--setting", type=click.Choice(["easy", "medium", "hard"]), default="medium", show_default=True,
              help="Revisited difficulty compared.")
@click.option("--n", type=click.IntRange(min=1), default=1, show_default=True, help="The N of Recall@N (places).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Queries listed.")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (points).")
def compare_command(a: Path, b: Path, setting: str, n: int, top: int, resamples: int, seed: int,
                    as_json: bool) -> None:
    """B against A on the same queries: per-query differences, the mean difference with a bootstrap 95% CI, a
    paired permutation test, and the queries that changed most."""
    from benchmarks.compare import compare
    from benchmarks.results import load_result

    result_a, result_b = load_result(a), load_result(b)
    _refuse_ignored_option(click.get_current_context(), result_a.protocol, a)
    c = compare(result_a, result_b, setting, n, resamples, seed, (str(a), str(b)))
    changed = [{"query": int(c.queries[i]), "a": 100 * c.a[i], "b": 100 * c.b[i],
                "difference": 100 * (c.b[i] - c.a[i])} for i in c.most_changed(top)]
    summary = {"dataset": result_a.dataset, "measure": c.measure, "queries": len(c.queries),
               "a": 100 * float(c.a.mean()), "b": 100 * float(c.b.mean()), "difference": c.difference,
               "ci95": [c.ci_low, c.ci_high], "p_value": c.p_value, "resamples": c.resamples}
    if as_json:
        _print_json({**summary, "most_changed": changed})
        return
    click.echo(f"{result_a.dataset}, per-query {c.measure}, {len(c.queries)} queries")
    click.echo(f"  A {result_a.method} {result_a.weights}: {summary['a']:.2f}   ({a})")
    click.echo(f"  B {result_b.method} {result_b.weights}: {summary['b']:.2f}   ({b})")
    click.echo(f"  B - A: {c.difference:+.2f} points, bootstrap 95% CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}], "
               f"paired permutation test p = {c.p_value:.4f} ({resamples} resamples, seed {seed})")
    if changed:
        click.echo(f"queries that changed most:\n  {'query':>6} {'A':>7} {'B':>7} {'B - A':>8}")
        for row in changed:
            click.echo(f"  {row['query']:>6} {row['a']:7.2f} {row['b']:7.2f} {row['difference']:+8.2f}")


def _refuse_ignored_option(ctx: click.Context, protocol: str, path: Path) -> None:
    """An explicit --setting or --n that the result's protocol would ignore is an error, not silently dropped."""
    from click.core import ParameterSource

    given = {name for name in ("setting", "n") if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if "setting" in given and protocol != "revisited":
        raise InputError(f"--setting applies to revisited results; this is a {protocol} result"
                         + (" (places use --n)" if protocol == "recall" else " (one AP per query)"), path)
    if "n" in given and protocol != "recall":
        raise InputError(f"--n applies to place-recognition (Recall@N) results; this is a {protocol} result"
                         + (" (use --setting)" if protocol == "revisited" else ""), path)


@cli.group("plot")
def plot() -> None:
    """Figures as PNG: Recall@N curves and mAP bars per benchmark, ranked-list galleries."""


@plot.command("summary")
@_RESULTS
@_REPORTED
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the PNGs (default: paper_tables/, next to the tables).")
@click.option("--dataset", "dataset_names", multiple=True, help="Only these datasets. Repeatable.")
def plot_summary(results_dir: Path | None, reported_dir: Path | None, out: Path | None,
                 dataset_names: tuple[str, ...]) -> None:
    """recall_<dataset>.png (Recall@N curves, methods overlaid) for place benchmarks and map_<dataset>.png (mAP
    bars: Easy / Medium / Hard, or the original Oxford/Paris protocol's one mAP) for the others; reported numbers
    are drawn beside ours."""
    from benchmarks import plots, tables
    from benchmarks.results import RESULTS_DIR

    reported, results = _numbers(results_dir, reported_dir)
    frame = tables.long_frame(reported, results)
    by_dataset: dict[str, list[Any]] = {}
    for _, result in results:
        by_dataset.setdefault(result.dataset, []).append(result)
    if unknown := sorted(set(dataset_names) - set(by_dataset)):
        raise InputError(f"--dataset {', '.join(unknown)}: no results for it here; datasets with results: "
                         f"{', '.join(sorted(by_dataset)) or 'none'}", results_dir or RESULTS_DIR)
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
@_ROOT
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
def plot_gallery(method: str, weights: str, dataset_name: str, chosen: str, top: int, setting: str,
                 out: Path, root: Path | None, device: str | None) -> None:
    """Ranked lists: each chosen query and its top database images, framed green (positive), red (negative) or grey
    (junk); descriptors are extracted afresh as `evaluate` does."""
    from benchmarks import plots
    from benchmarks.data_root import data_root
    from benchmarks.evaluate import EvaluateOptions, extract_descriptors
    from methods import load_plugins

    try:
        indices = [int(v) for v in chosen.split(",")]
    except ValueError:
        raise click.BadParameter(f"{chosen!r} is not a comma-separated list of query ids", param_hint="--queries") \
            from None
    spec, folder_root = _dataset(dataset_name), data_root(root)
    loaded = spec.load(folder_root, None)
    n_queries = len(loaded.query_paths)
    if bad := [q for q in indices if not 0 <= q < n_queries]:  # before the minutes of extraction
        raise InputError(f"--queries {','.join(map(str, bad))}: {dataset_name} has {n_queries} queries (ids 0 to "
                         f"{n_queries - 1})")
    found = extract_descriptors(load_plugins().get(method), weights, spec,
                                EvaluateOptions(data_root=folder_root, device=_device(device)), loaded)
    scored = f" ({setting})" if spec.protocol == "revisited" else ""
    title = f"{method} {found.weights.name} on {dataset_name}: top {top} per query{scored}"
    figure = plots.gallery_figure(found.loaded.db_paths, found.loaded.query_paths, found.loaded.ground_truth,
                                  found.db, found.queries, indices, found.queries_cropped, title, top, setting)
    click.echo(f"wrote {plots.save(figure, out)}")


@speed.command("search")
@click.option("--n-db", type=click.IntRange(min=1), default=None, help="With --dim and --n-queries: one case of "
              "this size instead of the two standard ones (missing sizes from the 1M case).")
@click.option("--dim", type=click.IntRange(min=1), default=None, help="Descriptor dimension of that case.")
@click.option("--n-queries", type=click.IntRange(min=1), default=None, help="Queries of that case.")
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True, help="Results per query.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True, help="Best of this many runs.")
@click.option("--compress", "compression", default=None, callback=_compression, metavar="SPEC",
              help="Also build and search compact signatures (pq64, top256+pq32, ...).")
@click.option("--faiss-defaults", is_flag=True, help="Also time faiss.knn with faiss's default settings.")
@click.option("--float32", is_flag=True, help="Also time the float32 search where the bfloat16 filter is taken.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def speed_search(n_db: int | None, dim: int | None, n_queries: int | None, k: int, repeat: int,
                 compression: str | None, faiss_defaults: bool, float32: bool, as_json: bool) -> None:
    """Exact top-k: 70 queries x 1M x 512-D, and 8280 x 83,952 x 4096-D (Pitts250k-test scale)."""
    from benchmarks.compression import Compression
    from benchmarks.speed.search import CASES, SearchCase
    from benchmarks.speed.search import run as run_search

    cases = None
    if (n_db, dim, n_queries) != (None, None, None):
        base = CASES["revisited_1m"]
        cases = {"custom": SearchCase(n_queries or base.n_queries, n_db or base.n_db, dim or base.dim)}
    figures = run_search(cases, k=k, repeat=repeat, faiss_defaults=faiss_defaults, float32=float32,
                         compression=Compression.parse(compression) if compression else None)
    if as_json:
        _print_json(figures)
        return
    for name, case in figures["cases"].items():
        line = (f"{name}: {case['n_queries']:,} queries x {case['n_db']:,} x {case['dim']}-D, top-{case['k']}: "
                f"{case['seconds']:.3f} s (CPU {case['cpu_seconds']:.3f} s), peak {case['peak_gib']:.2f} GiB "
                f"(descriptors {case['data_gib']:.2f}), {case['path']}")
        if "float32" in case:
            line += f"; float32 {case['float32']['seconds']:.3f} s"
        if "faiss_defaults" in case:
            line += f"; faiss defaults {case['faiss_defaults']['seconds']:.3f} s"
        click.echo(line)
        if "compressed" in case:
            c = case["compressed"]
            click.echo(f"  {c['spec']} ({c['bytes_per_image']} bytes/image): built in {c['build_seconds']:.3f} s, "
                       f"searched in {c['seconds']:.3f} s (CPU {c['cpu_seconds']:.3f} s)")
    env = figures["environment"]
    click.echo(f"(best of {repeat}; {env['cpus']} CPUs {env['cpu_model']}, load {env.get('load_average_1m', '?')}; "
               f"python {env['python']}, numpy {env['numpy']}, faiss {env['faiss-cpu']}, {env['platform']})")


@cli.command("reproduce")
@click.argument("method")
@click.option("--r1m", is_flag=True, help="Add the +1M variants (the R1M distractors: about 1M images to fetch).")
@click.option("--weights", "weights", multiple=True, metavar="NAME|PATH",
              help="Weights to evaluate instead of the method's released ones. Repeatable.")
@click.option("--dataset", "datasets", multiple=True, help="Datasets instead of the paper's. Repeatable.")
@click.option("--crop-queries/--no-crop-queries", default=None,
              help="Crop queries to their boxes (default: as the method's protocol says; logged, recorded).")
@click.option("--results", "results_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results go (default: the repository's results/).")
@_ROOT
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX",
              help="A copy laid out as the data root, tried first (URL_PREFIX/<dataset>/<file>). Repeatable.")
@click.option("--mirror-only", is_flag=True, help="Never try the official URLs.")
@click.option("--allow-insecure-http", is_flag=True,
              help="Accept files without a published checksum over plain http (R1M); their sha256 is then locked.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
@click.option("--allow-dirty", is_flag=True,
              help="Run although the suite has uncommitted changes (the results say so).")
def reproduce_command(method: str, r1m: bool, weights: tuple[str, ...], datasets: tuple[str, ...],
                      crop_queries: bool | None, results_dir: Path | None, root: Path | None,
                      mirrors: tuple[str, ...], mirror_only: bool, allow_insecure_http: bool, batch_size: int,
                      device: str | None, allow_dirty: bool) -> None:
    """Reproduce METHOD's table: fetch what it needs (checked first), evaluate each weights on each dataset."""
    from benchmarks.data_root import data_root
    from benchmarks.reproduce import ReproduceOptions, reproduce
    from benchmarks.results import RESULTS_DIR, record_dirty, require_clean_tree, write_result
    from datasets.acquire import AcquireOptions
    from methods import load_plugins

    require_clean_tree(allow_dirty)
    cls = load_plugins().get(method)
    options = ReproduceOptions(data_root=data_root(root), r1m=r1m, datasets=datasets, weights=weights,
                               crop_queries=crop_queries, batch_size=batch_size, device=_device(device),
                               acquire=AcquireOptions(mirrors=mirrors, mirror_only=mirror_only,
                                                      allow_insecure_http=allow_insecure_http))
    for result in reproduce(cls, options):
        path = write_result(record_dirty(result, allow_dirty), results_dir or RESULTS_DIR)
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in result.metrics.items() if not k.startswith("mp@"))
        crop = "cropped" if result.config["protocol"]["queries_cropped"] else "whole"
        click.echo(f"{result.dataset} / {method} / {result.weights} (queries {crop}): {shown}  -> {path}")


@speed.command("extract")
@click.option("--method", default="netvlad", show_default=True,
              help="A registered method, with random weights (netvlad: on a ResNet-18 trunk).")
@click.option("--config", "config_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's Config (netvlad starts from a ResNet-18 trunk). Repeatable.")
@_ROOT
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Best of this many runs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader workers (default: benchmarks.extract.default_workers).")
@click.option("--device", default=None, help="cpu, cuda (default: cuda when present).")
@click.option("--images", "limit", type=click.IntRange(min=1), default=None, help="Only the first N images.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def speed_extract(method: str, config_pairs: tuple[str, ...], root: Path | None, repeat: int, batch_size: int,
                  workers: int | None, device: str | None, limit: int | None, as_json: bool) -> None:
    """Extraction pipeline vs the model's pure forward vs a one-image-at-a-time loop, on the embedded images."""
    from benchmarks.speed.extract import NETVLAD_RESNET18
    from benchmarks.speed.extract import run as run_extract
    from methods import load_plugins
    from methods.base import parse_overrides

    cls = load_plugins().get(method)
    try:
        overrides = parse_overrides(cls.config_class, config_pairs)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    config = {**(NETVLAD_RESNET18 if method == "netvlad" else {}), **overrides}
    figures = run_extract(method, config, root, repeat, batch_size, -1 if workers is None else workers,
                          _device(device), limit)
    if as_json:
        _print_json(figures)
        return
    rates = figures["images_per_s"]
    click.echo(f"{method} on {figures['n_images']} embedded images ({', '.join(figures['image_sizes'])}), "
               f"batch {figures['batch_size']}, {figures['num_workers']} worker(s), {figures['device']}:")
    for name in ("forward", "pipeline", "one_by_one", "read"):
        click.echo(f"  {name:<11} {rates[name]:8.1f} images/s")
    click.echo(f"pipeline / forward: {figures['pipeline_over_forward']:.3f} (reading in the main process caps it "
               f"at {figures['serial_ceiling']:.3f}); one by one / forward: {figures['one_by_one_over_forward']:.3f}")
    env = figures["environment"]
    click.echo(f"(best of {repeat}; python {env['python']}, torch {env['torch']}, {env['cpus']} CPUs, "
               f"{env['torch_threads']} torch threads, {env['platform']})")


cli.add_command(extract_command)


def main() -> None:
    cli(prog_name="python -m benchmarks")
