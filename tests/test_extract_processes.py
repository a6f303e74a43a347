"""Extraction across processes: SIGKILL at random points then a rerun gives an uninterrupted run's numbers,
two runs filling one cache at once share the chunks through locks, and torchrun (gloo, 2 processes) writes
the descriptors of a single process."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.core.provenance import REPO_ROOT
from benchmarks.evaluation.cache import DescriptorCache
from tests.extract_worker import write_images

N_IMAGES = 24
KEY = {"n_images": N_IMAGES, "dtype": "float32", "model": "tiny"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, N_IMAGES)
    return folder


def _worker(images: Path, cache: Path, out: Path, *extra: str, launcher: tuple[str, ...] = (sys.executable,)
            ) -> subprocess.Popen:
    return subprocess.Popen([*launcher, "-m", "tests.extract_worker", "--images", str(images), "--cache", str(cache),
                             "--out", str(out), *extra], cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> list[dict]:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """An uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference") / "d.npy"
    _finish(_worker(images, out.parent / "cache", out))
    return np.load(out.with_suffix(".rank0.npy"))


@pytest.mark.slow
def test_sigkill_at_random_points_then_a_rerun_gives_the_same_numbers(images: Path, reference: np.ndarray,
                                                                       tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cache_dir, out = tmp_path / "cache", tmp_path / "d.npy"
    injected, progress = 0, []
    for _ in range(5):
        process = _worker(images, cache_dir, out, "--sleep", "0.04")
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6))  # the whole extraction takes about 24 batches x 2 scales x 0.04 s
        if process.poll() is None:
            injected += 1
        process.send_signal(signal.SIGKILL)
        process.communicate()
        cache = DescriptorCache(cache_dir, KEY)
        for c in range(cache.n_chunks):  # every chunk on disk is whole (atomic writes), none half-written
            if (cache_dir / "chunks" / f"{c:06d}.npz").exists():
                assert cache._load_chunk(c)[0].shape == (4, 16)
        progress.append(cache.chunks_done())
    final = _finish(_worker(images, cache_dir, out))
    recovered = int(np.array_equal(np.load(out.with_suffix(".rank0.npy")), reference)) * injected
    summary = f"{injected} faults injected, {recovered} recovered; chunks on disk after each kill: {progress}"
    assert injected >= 3 and recovered == injected, summary
    assert progress == sorted(progress) and final[0]["written"] == 6 - progress[-1], summary


@pytest.mark.slow
def test_two_runs_filling_one_cache_share_it_through_locks(images: Path, reference: np.ndarray,
                                                            tmp_path: Path) -> None:
    runs = [_worker(images, tmp_path / "cache", tmp_path / f"run{i}.npy", "--sleep", "0.02") for i in range(2)]
    reports = [_finish(run)[0] for run in runs]
    assert sum(r["written"] for r in reports) == 6, reports  # every chunk extracted once, by one of them
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"run{i}.rank0.npy"), reference)


@pytest.mark.slow
def test_torchrun_two_processes_write_the_descriptors_of_one(images: Path, reference: np.ndarray,
                                                             tmp_path: Path) -> None:
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    reports = _finish(_worker(images, tmp_path / "cache", tmp_path / "d.npy", "--workers", "1", launcher=torchrun))
    assert sorted(r["rank"] for r in reports) == [0, 1] and [r["written"] for r in reports] == [3, 3], reports
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"d.rank{rank}.npy"), reference)


@pytest.mark.slow
def test_two_nodes_through_a_rendezvous_endpoint_write_the_descriptors_of_one(images: Path, reference: np.ndarray,
                                                                             tmp_path: Path) -> None:
    """Two torchrun launchers, one per "node" (one process each), meet at a rendezvous endpoint as on a cluster;
    the data root (here the cache) is shared."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    nodes = [_worker(images, tmp_path / "cache", tmp_path / "d.npy", launcher=(
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
        str(rank), "--rdzv_endpoint", f"localhost:{port}")) for rank in (0, 1)]
    reports = [report for node in nodes for report in _finish(node)]
    assert sorted(r["rank"] for r in reports) == [0, 1] and [r["written"] for r in reports] == [3, 3], reports
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"d.rank{rank}.npy"), reference)
