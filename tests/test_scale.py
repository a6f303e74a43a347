"""The scale benchmark's pieces: the generated distractor set in the R1M layout, and an evaluation of
synth_landmarks + distractors killed at a random point after its first cache chunk, then resumed."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.core.acquire import AcquireOptions
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.speed.distractors import generate_distractors, image_name
from benchmarks.speed.scale import SynthLandmarksPlus1M, untrained_weights
from datasets.revisitop import Revisitop1M
from datasets.synthetic import SynthLandmarks

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
N_DISTRACTORS = 1900  # 2040 database images: two chunks of the descriptor cache (1024 + 1016), the second
# long enough (about 0.6 s on 2 idle cores) for the kill to land inside it
RUN = ("import json, logging, sys; from pathlib import Path; logging.basicConfig(level=logging.INFO); "
       "from benchmarks.speed.scale import evaluate_with_distractors as run; "
       "r = run(Path(sys.argv[1]), Path(sys.argv[2])); "
       "print(json.dumps({'metrics': r.metrics, 'descriptors': r.provenance.descriptor_sha256}))")


def test_distractors_are_in_the_r1m_layout_and_load_as_its_plugin_does(tmp_path: Path) -> None:
    folder = generate_distractors(tmp_path, 250)
    names = (folder / "revisitop1m.txt").read_text().splitlines()
    assert names == [image_name(i) for i in range(250)] and names[101] == "001/0000/00000065.jpg"
    loaded = Revisitop1M().load(tmp_path)
    assert len(loaded.db_paths) == 250 and all(p.is_file() for p in loaded.db_paths[::50])
    assert Revisitop1M().check(tmp_path) == ["images in revisitop1m.txt: 250, expected 1001001"]
    first = loaded.db_paths[7].read_bytes()
    shutil.rmtree(folder)
    generate_distractors(tmp_path, 300)  # the same bytes whatever N
    assert loaded.db_paths[7].read_bytes() == first


def _root(root: Path, weights: Path | None) -> Path:
    """A data root with synth_landmarks and the distractors; the weights made there, or copied from ``weights``."""
    SynthLandmarks().prepare(root, AcquireOptions())
    generate_distractors(root, N_DISTRACTORS)
    if weights is None:
        return untrained_weights(root)
    shutil.copytree(weights.parent, root / "weights")
    return root / "weights" / weights.name


def _evaluate(weights: Path, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, str(weights), str(root)], cwd=REPO_ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_an_evaluation_killed_after_a_chunk_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    weights = _root(tmp_path / "killed", None)
    victim = _evaluate(weights, tmp_path / "killed")
    chunks = tmp_path / "killed" / "cache" / "descriptors"
    while victim.poll() is None and not any(chunks.glob("*/chunks/000000.npz")):
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.2))  # a random point of the second chunk
    assert victim.poll() is None, "the run ended before the kill"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not any(chunks.glob("*/chunks/000001.npz")), "the kill came after the second chunk: nothing to resume"

    reference = _evaluate(_root(tmp_path / "whole", weights), tmp_path / "whole")
    resumed = _evaluate(weights, tmp_path / "killed")
    (out, log), (reference_out, _) = resumed.communicate(timeout=300), reference.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert "resuming: 1 of 2 chunks already in" in log
    assert json.loads(out) == json.loads(reference_out)
    assert len(SynthLandmarksPlus1M().load(tmp_path / "killed").db_paths) == 140 + N_DISTRACTORS
