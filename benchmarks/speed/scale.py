"""The scale benchmark: the embedded ``synth_landmarks`` plus N generated distractors in the R1M layout,
evaluated end to end through :func:`benchmarks.evaluation.evaluate.evaluate` (what ``python -m benchmarks
evaluate`` runs) with a real offline trunk, and timed stage by stage (``python -m benchmarks speed scale``).

The method is GeM on the EfficientNet-Lite0 ImageNet trunk (``--init efficientnet_lite0.in1k``, shipped with the
requirements), untrained (no whitening, one scale), made by ``python -m benchmarks train gem --steps 0`` as
``make demo`` makes its untrained checkpoints: 1280-D descriptors; distractors 64 pixels on the long side, the
benchmark's 128 x 96 (queries cropped from them).

The run is: generate (not timed as the user's path), ``data verify``'s check of the distractors, then one cold
evaluation (empty descriptor cache: image contents hashed, headers, reading, model, chunk writes, merge) and one
warm one (cache complete: what a second method's search or a rerun costs), each followed by writing its result.
Each stage is reported with seconds, seconds per image, and the process's peak RSS when it ended; disk use of
the images, the cache, the file-digest memo and the result.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.core.acquire import AcquireOptions
from benchmarks.core.atomic import atomic_write_text
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.evaluation.evaluate import EvaluateOptions, evaluate
from benchmarks.evaluation.results import RunResult, write_result
from benchmarks.evaluation.stage_times import peak_rss_bytes, recording, stage
from benchmarks.speed import machine
from benchmarks.speed.distractors import generate_distractors
from datasets.revisitop import RevisitedPlus1M, Revisitop1M
from datasets.synthetic import SynthLandmarks
from methods.gem import GeMMethod

WEIGHTS_NAME = "effl0.untrained"  # as make demo names its untrained checkpoints
TRAIN_ARGS = ("train", "gem", "--dataset", "synth_landmarks", "--steps", "0", "--init", "efficientnet_lite0.in1k",
              "--config", "backbone=efficientnet_lite0", "--config", "whitening=false", "--config", "scales=1.0",
              "--name", WEIGHTS_NAME)


class SynthLandmarksPlus1M(RevisitedPlus1M):
    """synth_landmarks with the distractors under ``<data root>/revisitop1m`` appended, as roxford5k+1m is
    assembled (not registered: its distractors are whatever the scale benchmark generated)."""

    name = "synth_landmarks+1m"
    description = "synth_landmarks with the (generated) distractors of <data root>/revisitop1m"
    base = SynthLandmarks
    requires = ("synth_landmarks", "revisitop1m")


def untrained_weights(data_root: Path) -> Path:
    """The untrained GeM checkpoint, made once under the data root by the ``train`` command."""
    out = data_root / "weights" / "gem-effl0-untrained.pt"
    if not out.exists():
        subprocess.run([sys.executable, "-m", "benchmarks", *TRAIN_ARGS, "--root", str(data_root), "--out", str(out),
                        "--device", "cpu"], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return out


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (blocks, as ``du``)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    stack = [str(path)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def _table(times: dict[str, dict[str, Any]], n_images: int) -> dict[str, dict[str, Any]]:
    return {name: {**row, "s_per_image": row["seconds"] / n_images} for name, row in times.items()}


def evaluate_with_distractors(weights: Path, data_root: Path, batch_size: int = 64) -> RunResult:
    """The untrained GeM on synth_landmarks plus the distractors under ``data_root``, through the descriptor
    cache (resumable), as ``python -m benchmarks evaluate`` runs it."""
    options = EvaluateOptions(data_root=data_root, batch_size=batch_size, device="cpu")
    return evaluate(GeMMethod, str(weights), SynthLandmarksPlus1M(), options)


def _evaluation(weights: Path, data_root: Path, batch_size: int, n_images: int) -> dict[str, Any]:
    """One evaluation and its result write, stage by stage."""
    start = time.perf_counter()
    with recording() as times:
        result = evaluate_with_distractors(weights, data_root, batch_size)
        with stage("result write"):
            path = write_result(result, data_root / "scale-results")
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 3), "s_per_image": wall / n_images, "peak_rss_bytes": peak_rss_bytes(),
            "stages": _table(times.as_dict(), n_images), "metrics": result.metrics,
            "descriptor_sha256": result.provenance.descriptor_sha256, "result": str(path)}


def run(n_distractors: int, data_root: Path, batch_size: int = 64, out: Path | None = None,
        seed: int = 0) -> dict[str, Any]:
    """The benchmark's figures at ``n_distractors`` (see the module docstring), also written to ``out`` as JSON.
    The data root's cache (descriptors, file digests) is emptied first, so the cold run is cold."""
    data_root = Path(data_root)
    shutil.rmtree(data_root / "cache", ignore_errors=True)
    figures: dict[str, Any] = {"n_distractors": n_distractors, "data_root": str(data_root),
                               "machine_before": machine("cpu")}
    start = time.perf_counter()
    SynthLandmarks().prepare(data_root, AcquireOptions())
    generate_distractors(data_root, n_distractors, seed)
    figures["generate_s"] = round(time.perf_counter() - start, 3)
    weights = untrained_weights(data_root)
    start = time.perf_counter()
    problems = Revisitop1M().check(data_root)  # the real set's count (1,001,001) is the one expected problem
    figures["data_verify"] = {"seconds": round(time.perf_counter() - start, 3), "problems": problems[:3],
                              "peak_rss_bytes": peak_rss_bytes()}
    loaded = SynthLandmarksPlus1M().load(data_root)
    n_images = len(loaded.db_paths) + len(loaded.query_paths)
    figures["n_images"] = n_images
    del loaded
    figures["cold"] = _evaluation(weights, data_root, batch_size, n_images)
    figures["warm"] = _evaluation(weights, data_root, batch_size, n_images)
    figures["disk_bytes"] = {"distractor_images": disk_bytes(data_root / "revisitop1m"),
                             "descriptor_cache": disk_bytes(data_root / "cache" / "descriptors"),
                             "file_digest_memo": disk_bytes(data_root / "cache" / "file-sha256.sqlite"),
                             "result": disk_bytes(Path(figures["cold"]["result"]))}
    figures["machine_after"] = machine("cpu")
    if out is not None:
        atomic_write_text(out, json.dumps(figures, indent=1))
    return figures
