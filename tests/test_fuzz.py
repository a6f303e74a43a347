"""Fuzzing (hypothesis): ``score revisited`` / ``score recall`` and the ground-truth readers on mutated copies
of real files (byte flips, insertions, deletions, truncation). Every outcome is a result (exit code 0) or one
clear line naming the file (exit code 2): never a traceback."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from datasets.formats import DbStruct, read_oxford_gnd, read_place_ground_truth, read_revisited_gnd, write_dbstruct
from tests.conftest import GND, PLACES

# (kind, position, byte): positions drawn near the start (headers, lengths, keys) as often as anywhere.
EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                           st.one_of(st.integers(0, 300), st.integers(0, 1 << 30)), st.integers(0, 255)),
                 min_size=1, max_size=4)
FUZZ = settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % max(len(out), 1)
        if kind == "flip" and out:
            out[at] ^= 1 << (value % 8)
        elif kind == "set" and out:
            out[at] = value
        elif kind == "insert":
            out[at:at] = bytes([value])
        elif kind == "delete":
            del out[at:at + 1 + value % 16]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


def score(*args: object) -> None:
    """Run ``score ...``; assert it gave a result or exactly one ``error: <file>: ...`` line with code 2."""
    result = CliRunner().invoke(cli, ["score", *map(str, args), "--json"])
    if result.exit_code == 0:
        return
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def revisited_inputs(folder):
    """Real gnd pickles, a ranking of ROxford5k and descriptors (.npz and revisitop's .mat) for it."""
    rng = np.random.default_rng(0)
    ranks = np.argsort(rng.random((70, 4993)), axis=1)
    files = {"ranks.npy": io.BytesIO(), "features.npz": io.BytesIO(), "features.mat": io.BytesIO()}
    np.save(files["ranks.npy"], ranks)
    db, queries = rng.standard_normal((4993, 4)).astype(np.float32), rng.standard_normal((70, 4)).astype(np.float32)
    np.savez(files["features.npz"], db=db, queries=queries)
    scipy.io.savemat(files["features.mat"], {"X": db.T, "Q": queries.T})
    return {**{name: buffer.getvalue() for name, buffer in files.items()},
            **{f"gnd_{name}.pkl": path.read_bytes() for name, path in GND.items()}}


@FUZZ
@given(name=st.sampled_from(["gnd_roxford5k.pkl", "gnd_rparis6k.pkl"]), edits=EDITS)
def test_mutated_gnd_pickles(folder, revisited_inputs, name, edits):
    gnd = folder / name
    gnd.write_bytes(mutate(revisited_inputs[name], edits))
    for reader in (read_revisited_gnd, read_oxford_gnd):
        try:
            reader(gnd)
        except InputError as error:
            assert str(error).startswith(f"{gnd}: ")
    if name == "gnd_roxford5k.pkl":
        (folder / "ranks.npy").write_bytes(revisited_inputs["ranks.npy"])
        score("revisited", "--gnd", gnd, "--ranks", folder / "ranks.npy")


@FUZZ
@given(name=st.sampled_from(["ranks.npy", "features.npz", "features.mat"]), edits=EDITS)
def test_mutated_rankings_and_features(folder, revisited_inputs, name, edits):
    gnd = folder / "gnd_roxford5k.pkl"
    gnd.write_bytes(revisited_inputs["gnd_roxford5k.pkl"])
    path = folder / name
    path.write_bytes(mutate(revisited_inputs[name], edits))
    score("revisited", "--gnd", gnd, "--ranks" if name == "ranks.npy" else "--features", path)


@pytest.fixture(scope="module")
def place_inputs(folder):
    """Pitts30k-test's real ground truth (.npz), a dbStruct .mat of part of it, and predictions."""
    with np.load(PLACES["pitts30k_test"]) as npz:
        utm_db, utm_q, threshold = npz["utmDb"][:400], npz["utmQ"][:50], float(npz["posDistThr"])
    mat = folder / "source.mat"
    write_dbstruct(mat, DbStruct("test", tuple(f"db{i}.jpg" for i in range(400)), utm_db,
                                 tuple(f"q{i}.jpg" for i in range(50)), utm_q, threshold))
    predictions = io.BytesIO()
    np.save(predictions, np.argsort(np.random.default_rng(1).random((50, 400)), axis=1)[:, :20])
    return {"gt.npz": PLACES["pitts30k_test"].read_bytes(), "gt.mat": mat.read_bytes(),
            "predictions.npy": predictions.getvalue()}


@FUZZ
@given(name=st.sampled_from(["gt.npz", "gt.mat", "predictions.npy"]), edits=EDITS,
       panorama=st.sampled_from([None, 12]))
def test_mutated_place_ground_truth_and_predictions(folder, place_inputs, name, edits, panorama):
    files: dict[str, Path] = {}
    for key in ("gt.mat", "predictions.npy"):
        files[key] = folder / key
        files[key].write_bytes(place_inputs[key])
    files[name] = folder / name
    files[name].write_bytes(mutate(place_inputs[name], edits))
    gt = files["gt.npz" if name == "gt.npz" else "gt.mat"]
    try:
        read_place_ground_truth(gt, panorama)
    except InputError as error:
        assert str(error).startswith(f"{gt}: ")
    extra = ["--panorama-size", panorama] if panorama else []
    score("recall", "--gt", gt, "--predictions", files["predictions.npy"], *extra)


def test_a_corrupt_memo_index_costs_no_memory(tmp_path):
    """Found by the fuzzing above: one byte in a LONG_BINPUT index made the C unpickler allocate and clear
    4 GB (its memo table grows to the largest index named). The reader's memo is a dict: same data, no cost."""
    import pickletools
    import subprocess
    import sys

    from benchmarks.core.provenance import REPO_ROOT

    data = bytearray(GND["roxford5k"].read_bytes())
    position = next(pos for op, _, pos in pickletools.genops(bytes(data)) if op.name == "LONG_BINPUT")
    data[position + 1:position + 5] = (0x0F000CCD).to_bytes(4, "little")
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(bytes(data))
    assert read_revisited_gnd(path).db_names == read_revisited_gnd(GND["roxford5k"]).db_names
    # Python's allocations, traced in a fresh interpreter (a forked child's ru_maxrss would include its parent's)
    peak = subprocess.run([sys.executable, "-c", "import sys, tracemalloc; from datasets.formats import "
                           "read_revisited_gnd; tracemalloc.start(); read_revisited_gnd(sys.argv[1]); "
                           "print(tracemalloc.get_traced_memory()[1])", str(path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert int(peak) < 1 << 28  # bytes: under 256 MiB
