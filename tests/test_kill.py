"""Kill tests: SIGKILL a download, a training run and a results writer at random points, in subprocesses.

After every kill nothing partial may be taken for complete (the file is absent, or whole and valid), and a
rerun ends with exactly what an uninterrupted run gives. Each test counts the faults it injected (kills that
hit a live process) and the recoveries (reruns that completed correctly from what a kill left).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.core.download import fetch
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.evaluation.results import load_result, write_result
from datasets.formats import DbStruct, read_dbstruct, write_dbstruct
from methods.netvlad import NetVLADMethod
from methods.weights import load_checkpoint
from tests.loopback import LoopbackServer
from tests.test_results import make_result
from tests.test_train import CLI_CONFIG

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_after(process: subprocess.Popen, seconds: float, once: Path | None = None) -> bool:
    """SIGKILL ``process`` after ``seconds`` (counted from when ``once`` exists, if given) unless it ended first;
    True when the kill hit a live process."""
    while once is not None and not once.exists() and process.poll() is None:
        time.sleep(0.01)
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


DOWNLOAD = ("import sys; from pathlib import Path; from benchmarks.core.download import Retry, fetch; "
            "fetch([sys.argv[1]], Path(sys.argv[2]), sha256=sys.argv[3], retry=Retry(2, 0.0, 10.0))")


@pytest.mark.slow
def test_killed_downloads_resume_and_never_leave_a_partial_file_as_complete(tmp_path):
    body = random.Random(0).randbytes(3 << 20)
    sha = hashlib.sha256(body).hexdigest()
    dest = tmp_path / "archive.tgz"
    part = dest.with_name(dest.name + ".part")
    rng = random.Random(1)
    injected = recovered = 0
    with LoopbackServer() as server:
        server.files["/archive.tgz"] = body
        server.pace["/archive.tgz"] = 0.02  # about a second for the whole file
        for _ in range(4):
            args = ("-c", DOWNLOAD, server.url + "/archive.tgz", str(dest), sha)
            injected += kill_after(start(*args), rng.uniform(0.0, 1.2), once=part)
            assert not dest.exists() or dest.read_bytes() == body  # complete and verified, or absent
            if part.exists():
                assert body.startswith(part.read_bytes())  # what is kept is a prefix to resume from
            if dest.exists():
                break
        finished = start("-c", DOWNLOAD, server.url + "/archive.tgz", str(dest), sha)
        assert finished.wait(timeout=120) == 0
        recovered += injected
    assert dest.read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.tgz"]  # no .part, .lock, .part.json, .tmp
    resumed = [r for _, r in server.requests if r is not None]
    print(f"download: {injected} kills injected, {recovered} recovered, {len(resumed)} byte-range resumes")
    assert injected >= 1


def test_what_a_kill_right_after_the_final_rename_leaves_is_tidied(tmp_path):
    """Killed between renaming the verified file into place and removing its transfer record (and while
    writing that record): the next run takes the file as it is and removes both leftovers."""
    dest = tmp_path / "archive.tgz"
    dest.write_bytes(b"complete")
    (tmp_path / "archive.tgz.part.json").write_text('{"url": "http://127.0.0.1:9/archive.tgz"}')
    (tmp_path / ".archive.tgz.part.json.x1y2.tmp").write_text('{"url": ')
    with LoopbackServer() as server:
        fetch([server.url + "/archive.tgz"], dest, sha256=hashlib.sha256(b"complete").hexdigest())
        assert server.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.tgz"]


def small_places_root(embedded: Path, root: Path) -> Path:
    """A data root whose synth_places train split is 8 queries and the ~30 database images around them,
    so that a training run takes seconds; the images are the embedded benchmark's own."""
    source = embedded / "synth_places"
    db = read_dbstruct(source / "datasets" / "synth_places_train.mat")
    queries = list(range(8))
    distance = ((db.utm_db[:, None] - db.utm_queries[None, queries]) ** 2).sum(-1) ** 0.5
    near = {int(i) for i in distance.argsort(axis=0)[:3].ravel()}
    far = [int(i) for i in (distance.min(1) > 100).nonzero()[0][::20]]
    keep = sorted(near | set(far))
    folder = root / "synth_places"
    (folder / "datasets").mkdir(parents=True)
    (folder / "images").symlink_to(source / "images", target_is_directory=True)
    write_dbstruct(folder / "datasets" / "synth_places_train.mat", DbStruct(
        "train", tuple(db.db_image_names[i] for i in keep), db.utm_db[keep],
        tuple(db.query_image_names[i] for i in queries), db.utm_queries[queries], db.pos_dist_thr))
    return root


def train_args(root: Path, out: Path) -> list[str]:
    return ["-m", "benchmarks", "train", "netvlad", "--dataset", "synth_places", "--steps", "6", "--seed", "1",
            "--init", "none", *CLI_CONFIG, "--set", "cache_refresh=4", "--set", "n_sampled_negatives=10", "--set", "n_negatives=2",
            "--set", "tuples_per_batch=2", "--set", "train_from=layer3", "--set", "cluster_images=10",
            "--name", "resnet18.test", "--out", str(out), "--root", str(root)]


@pytest.mark.slow
def test_a_killed_training_run_resumes_to_the_same_weights(embedded_root, tmp_path):
    root = small_places_root(embedded_root, tmp_path / "data")
    reference = tmp_path / "straight.pt"
    began = time.monotonic()
    assert start(*train_args(root, reference)).wait(timeout=600) == 0
    duration = time.monotonic() - began
    out = tmp_path / "killed.pt"
    state = Path(f"{out}.state")
    rng = random.Random(2)
    injected = from_state = 0
    # One kill while it starts or initialises, then kills soon after a round is saved (mid-round, mid-write).
    for seconds, once in ((rng.uniform(0.2, 0.6) * duration, None), (rng.uniform(0, 0.15) * duration, state),
                          (rng.uniform(0, 0.15) * duration, state)):
        from_state += state.exists()
        injected += kill_after(start(*train_args(root, out)), seconds, once)
        if out.exists():  # written atomically at the very end: whole, or not there
            load_checkpoint(NetVLADMethod, out)
    from_state += state.exists()
    assert start(*train_args(root, out)).wait(timeout=600) == 0
    expected, got = load_checkpoint(NetVLADMethod, reference).model, load_checkpoint(NetVLADMethod, out).model
    for (name, a), b in zip(expected.state_dict().items(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    losses = [json.loads(Path(f"{p}.json").read_text())["origin"]["round_losses"] for p in (reference, out)]
    assert losses[0] == losses[1]
    assert not state.exists()
    print(f"training: {injected} kills injected ({from_state} reruns resumed from a saved round), all recovered; "
          f"an uninterrupted run took {duration:.1f} s")
    assert injected >= 1 and from_state >= 1


WRITER = ("import sys; from dataclasses import replace; from pathlib import Path; "
          "from benchmarks.evaluation.results import write_result; from tests.test_results import make_result\n"
          "base = make_result()\n"
          "for i in range(100000):\n"
          "    write_result(replace(base, config={'dim': 8, 'version': i % 2}), Path(sys.argv[1]))")


@pytest.mark.slow
def test_a_killed_results_writer_never_leaves_a_partial_result(tmp_path):
    path = tmp_path / make_result().relative_path()
    rng = random.Random(3)
    injected = 0
    for _ in range(5):
        injected += kill_after(start("-c", WRITER, str(tmp_path)), rng.uniform(1.0, 2.5))
        if path.exists():
            assert load_result(path).config["version"] in (0, 1)  # whole and valid: the old or the new one
    written = write_result(replace(make_result(), config={"dim": 8, "version": 2}), tmp_path)
    assert load_result(written).config["version"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # killed writers' temp files removed
    print(f"results: {injected} kills injected, all recovered")
    assert injected >= 1
