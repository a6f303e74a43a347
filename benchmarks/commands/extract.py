"""``python -m benchmarks extract``: descriptors of any images under a method's test protocol.

The evaluator's pipeline (:func:`benchmarks.evaluation.extract.extract_all`) and weights resolution
(:func:`methods.weights.resolve_weights`), so a row equals the one the evaluator computes for the same image. Registered
on the top group by :mod:`benchmarks.commands.main`.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import click
import numpy as np

from benchmarks.core.errors import InputError


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``X1,Y1,X2,Y2`` (pixels, x2 and y2 exclusive) -> a box; :class:`InputError` for anything else."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--query-box {text!r} must be four numbers X1,Y1,X2,Y2")
    x1, y1, x2, y2 = values
    if min(x1, y1) < 0 or round(x2) <= round(x1) or round(y2) <= round(y1):
        raise InputError(f"--query-box {text!r} must have 0 <= X1 < X2 and 0 <= Y1 < Y2 (after rounding to pixels)")
    return x1, y1, x2, y2


def extract_images(method: str, weights: str, images: tuple[Path, ...], box: tuple[float, ...] | None,
                   data_root: Path, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """(N, D) float32 descriptors of ``images`` in order, each cropped to ``box`` first when given."""
    from benchmarks.evaluation.extract import ExtractOptions, extract_all
    from methods import load_plugins
    from methods.weights import resolve_weights

    missing = [path for path in images if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"no such image{more}", missing[0])
    cls = load_plugins().get(method)
    resolved = resolve_weights(cls, weights, data_root)
    model = resolved.model.to(device)
    boxes = None if box is None else np.tile(np.asarray(box, dtype=np.float64), (len(images), 1))
    options = ExtractOptions(batch_size=batch_size, device=device, label=f"{method} weights {resolved.name}")
    return extract_all(model, images, model.protocol, boxes, options).descriptors


def save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as a ``.npy`` file at exactly ``path``, written atomically."""
    from benchmarks.core.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


@click.command("extract")
@click.option("--method", required=True, help="A registered method (netvlad, mscfp, remap, dolg).")
@click.option("--weights", required=True, help="A weights name of the method, or the path of a checkpoint.")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .npy to write: (N, D) float32, one row per image in the order given.")
@click.option("--query-box", default=None, metavar="X1,Y1,X2,Y2",
              help="Crop every image to this box first, as a revisited query is cropped.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data root for named weights (default: $BENCH_DATA, else ~/.cache/image-retrieval-benchmarks).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
def extract_command(method: str, weights: str, images: tuple[Path, ...], out: Path, query_box: str | None,
                    root: Path | None, batch_size: int, device: str | None) -> None:
    """Descriptors of IMAGE... under the method's test protocol (size, scales, mean/std), as the evaluator
    extracts them."""
    import torch

    from benchmarks.core.data_root import data_root

    box = None if query_box is None else parse_box(query_box)
    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    descriptors = extract_images(method, weights, images, box, data_root(root), batch_size, chosen)
    save_npy(out, descriptors)
    click.echo(f"{len(images)} x {descriptors.shape[1]} descriptors ({method}, {weights}) -> {out}")
