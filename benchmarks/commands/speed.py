"""``python -m benchmarks speed``: speed benchmarks, with the machine and versions that produced them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from benchmarks.commands.options import ROOT, compression_spec, device_for, print_json


@click.group()
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
        print_json(figures)
        return
    rev, rec = figures["revisited"], figures["recall"]
    click.echo(f"revisited mAP/mP@k, {rev['n_queries']} queries x {rev['n_db']:,} ranked: {rev['seconds']:.3f} s")
    click.echo(f"recall@N, {rec['n_queries']} queries x top-{rec['k']} of {rec['n_db']:,}: {rec['seconds']:.3f} s")
    env = figures["environment"]
    click.echo(f"(best of {repeat}; python {env['python']}, numpy {env['numpy']}, {env['platform']})")


@speed.command("search")
@click.option("--n-db", type=click.IntRange(min=1), default=None, help="With --dim and --n-queries: one case of "
              "this size instead of the two standard ones (missing sizes from the 1M case).")
@click.option("--dim", type=click.IntRange(min=1), default=None, help="Descriptor dimension of that case.")
@click.option("--n-queries", type=click.IntRange(min=1), default=None, help="Queries of that case.")
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True, help="Results per query.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True, help="Best of this many runs.")
@click.option("--compress", "compression", default=None, callback=compression_spec, metavar="SPEC",
              help="Also build and search compact signatures (pq64, top256+pq32, ...).")
@click.option("--faiss-defaults", is_flag=True, help="Also time faiss.knn with faiss's default settings.")
@click.option("--float32", is_flag=True, help="Also time the float32 search where the bfloat16 filter is taken.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def speed_search(n_db: int | None, dim: int | None, n_queries: int | None, k: int, repeat: int,
                 compression: str | None, faiss_defaults: bool, float32: bool, as_json: bool) -> None:
    """Exact top-k: 70 queries x 1M x 512-D, and 8280 x 83,952 x 4096-D (Pitts250k-test scale)."""
    from benchmarks.evaluation.compression import Compression
    from benchmarks.speed.search import CASES, SearchCase
    from benchmarks.speed.search import run as run_search

    cases = None
    if (n_db, dim, n_queries) != (None, None, None):
        base = CASES["revisited_1m"]
        cases = {"custom": SearchCase(n_queries or base.n_queries, n_db or base.n_db, dim or base.dim)}
    figures = run_search(cases, k=k, repeat=repeat, faiss_defaults=faiss_defaults, float32=float32,
                         compression=Compression.parse(compression) if compression else None)
    if as_json:
        print_json(figures)
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


@speed.command("extract")
@click.option("--method", default="netvlad", show_default=True,
              help="A registered method, with random weights (netvlad: on a ResNet-18 trunk).")
@click.option("--config", "config_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's Config (netvlad starts from a ResNet-18 trunk). Repeatable.")
@ROOT
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Best of this many runs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader workers (default: benchmarks.evaluation.extract.default_workers).")
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
                          device_for(device), limit)
    if as_json:
        print_json(figures)
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


@speed.command("scale")
@click.option("--distractors", "n_distractors", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Generated distractors added to synth_landmarks (R1M layout, 64 px long side).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A data root of its own (its cache is emptied first).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
def speed_scale(n_distractors: int, root: Path, batch_size: int, out: Path | None) -> None:
    """synth_landmarks + N distractors evaluated end to end, stage by stage (JSON)."""
    from benchmarks.speed.scale import run as run_scale

    print_json(run_scale(n_distractors, root, batch_size, out))


@speed.command("gpu")
@click.option("--device", default="cuda", show_default=True)
@click.option("--images", "n_images", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--size", type=(int, int), default=(1024, 768), show_default=True, help="Width and height.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
def speed_gpu(device: str, n_images: int, size: tuple[int, int], batch_size: int, repeat: int,
              out: Path | None) -> None:
    """DOLG R101 5-scale extraction: images/s, fraction of bf16 peak, pipeline/forward, bf16 vs fp32 cosine."""
    from benchmarks.speed.gpu import run as run_gpu

    print_json(run_gpu(device, n_images, size, batch_size, repeat, out))
