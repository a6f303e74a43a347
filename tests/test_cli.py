"""The command line: output formats, the one-line errors with exit code 2, and every input route."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.provenance import REPO_ROOT
from benchmarks.evaluation.results import load_result
from datasets.formats import read_revisited_gnd
from tests.conftest import GND, PLACES
from tests.test_metrics_reference import OFFICIAL, deterministic_ranks


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


@pytest.fixture
def tiny_gnd(tmp_path):
    """4 database images, 2 queries: query 0 easy {0} hard {1} junk {2}; query 1 hard {3} only."""
    path = tmp_path / "gnd_tiny.pkl"
    gnd = [{"easy": [0], "hard": [1], "junk": [2], "bbx": [0, 0, 5, 5]},
           {"easy": [], "hard": [3], "junk": [], "bbx": [1, 1, 4, 4]}]
    path.write_bytes(pickle.dumps({"gnd": gnd, "imlist": list("abcd"), "qimlist": ["q0", "q1"]}))
    return path


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0 and "list" in result.output and "score" in result.output


def test_list_aligns_every_description_whatever_the_longest_name():
    rows = [line for line in run("list").output.splitlines() if line.startswith("  ")]
    starts = {len(line) - len(line[2:].split(" ", 1)[1].lstrip()) for line in rows}
    assert len(rows) > 10 and len(starts) == 1  # holidays_unrotated (18 letters) included


def test_list_json():
    result = run("list", "--json")
    assert result.exit_code == 0
    assert set(json.loads(result.output)) == {"methods", "datasets"}


def test_score_revisited_json_by_hand(tmp_path, tiny_gnd):
    ranks = tmp_path / "r.npy"
    np.save(ranks, np.array([[3, 1, 2, 0], [3, 0, 1, 2]]))
    result = run("score", "revisited", "--gnd", tiny_gnd, "--ranks", ranks, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"easy", "medium", "hard"}
    assert set(out["easy"]) == {"map", "mp@1", "mp@5", "mp@10", "n_queries", "ap"}
    assert out["easy"]["ap"] == [0.25, None] and out["easy"]["n_queries"] == 1 and out["easy"]["map"] == 0.25
    assert out["medium"]["ap"] == [pytest.approx(5 / 12), 1.0]
    assert out["hard"]["ap"] == [0.25, 1.0] and out["hard"]["map"] == 0.625


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_revisitop_db_major_layout_and_features_give_the_official_numbers(tmp_path, name):
    ranks = deterministic_ranks(read_revisited_gnd(GND[name]))
    np.save(tmp_path / "r.npy", ranks.T)
    out = json.loads(run("score", "revisited", "--gnd", GND[name], "--ranks", tmp_path / "r.npy",
                         "--ranks-layout", "db-major", "--json").output)
    assert out["medium"]["map"] == pytest.approx(OFFICIAL[(name, "medium")][0], abs=1e-9)
    assert out["hard"]["mp@10"] == pytest.approx(OFFICIAL[(name, "hard")][3], abs=1e-9)
    wrong = run("score", "revisited", "--gnd", GND[name], "--ranks", tmp_path / "r.npy")
    assert wrong.exit_code == 2 and "--ranks-layout db-major" in wrong.stderr


def test_features_npz_and_mat_rank_by_inner_product_with_ties_by_index(tmp_path, tiny_gnd):
    db = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    queries = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    # query 0 ranks 1, 2 (tie, by index), 3, 0; query 1 ranks 0, 3, 1, 2
    np.savez(tmp_path / "f.npz", db=db, queries=queries)
    scipy.io.savemat(tmp_path / "f.mat", {"X": db.T, "Q": queries.T})
    ranks = tmp_path / "r.npy"
    np.save(ranks, np.array([[1, 2, 3, 0], [0, 3, 1, 2]]))
    expected = json.loads(run("score", "revisited", "--gnd", tiny_gnd, "--ranks", ranks, "--json").output)
    for features in ("f.npz", "f.mat"):
        result = run("score", "revisited", "--gnd", tiny_gnd, "--features", tmp_path / features, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == expected


def test_original_protocol(tmp_path):
    gnd = tmp_path / "gnd_oxford5k.pkl"
    gnd.write_bytes(pickle.dumps({"gnd": [{"ok": [0, 2], "junk": [1]}], "imlist": list("abcd"), "qimlist": ["q"]}))
    np.save(tmp_path / "r.npy", np.array([[3, 0, 1, 2]]))
    out = json.loads(run("score", "revisited", "--protocol", "oxford", "--gnd", gnd, "--ranks", tmp_path / "r.npy",
                         "--json").output)
    assert out["ap"] == [pytest.approx((0 + 1 / 2) / 4 + (1 / 2 + 2 / 3) / 4)] and out["n_queries"] == 1


def test_readable_table(tmp_path, tiny_gnd):
    np.save(tmp_path / "r.npy", np.array([[3, 1, 2, 0], [3, 0, 1, 2]]))
    result = run("score", "revisited", "--gnd", tiny_gnd, "--ranks", tmp_path / "r.npy")
    assert result.exit_code == 0
    assert "   easy     25.00" in result.output and "    hard     62.50" in result.output


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0.5, 1.0, 2.0, 3.0]] * 2), "integer database ids"),
        (np.array([[0, 1, 2, 9]] * 2), "id 9, outside the database's 0..3"),
        (np.array([[0, 1, 1, 2]] * 2), "row 0 lists database id 1 more than once"),
        (np.array([[0, 1, 2, 3]] * 3), "3 rows but the ground truth has 2 queries"),
    ],
)
def test_bad_rankings_exit_2_with_one_line_naming_the_file(tmp_path, tiny_gnd, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    result = run("score", "revisited", "--gnd", tiny_gnd, "--ranks", path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and str(path) in result.stderr


def test_bad_files_exit_2(tmp_path, tiny_gnd):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY garbage")
    result = run("score", "revisited", "--gnd", tiny_gnd, "--ranks", garbage)
    assert result.exit_code == 2 and "cannot read as a plain .npy array" in result.stderr
    np.save(tmp_path / "objects.npy", np.array([[0, None]], dtype=object), allow_pickle=True)
    assert run("score", "revisited", "--gnd", tiny_gnd, "--ranks", tmp_path / "objects.npy").exit_code == 2
    np.savez(tmp_path / "nan.npz", db=np.full((4, 2), np.nan), queries=np.ones((2, 2)))
    result = run("score", "revisited", "--gnd", tiny_gnd, "--features", tmp_path / "nan.npz")
    assert result.exit_code == 2 and "'db' holds NaN or infinite values" in result.stderr
    np.savez(tmp_path / "short.npz", db=np.ones((3, 2)), queries=np.ones((2, 2)))
    result = run("score", "revisited", "--gnd", tiny_gnd, "--features", tmp_path / "short.npz")
    assert result.exit_code == 2 and "3 database descriptors but the ground truth lists 4" in result.stderr
    result = run("score", "revisited", "--gnd", tmp_path / "missing.pkl", "--ranks", garbage)
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert run("score", "revisited", "--gnd", tiny_gnd).exit_code == 2  # neither --ranks nor --features


def test_score_recall_npz_and_panoramas(tmp_path):
    gt = tmp_path / "gt.npz"
    utm_db = np.array([[100.0, 0.0]] * 8 + [[0.0, 0.0]] * 2)
    np.savez(gt, utmDb=utm_db, utmQ=np.zeros((2, 2)), posDistThr=25)
    pred = tmp_path / "p.npy"
    np.save(pred, np.array([[0, 1, 2, 9, 3], [8, 0, 1, 2, 3]]))
    flat = json.loads(run("score", "recall", "--gt", gt, "--predictions", pred, "--n", "1,4", "--json").output)
    assert flat == {"recall@1": 0.5, "recall@4": 1.0, "n_queries": 2, "first_hit": [4, 1]}
    collapsed = run("score", "recall", "--gt", gt, "--predictions", pred, "--n", "1,3", "--panorama-size", "2",
                    "--json")
    assert json.loads(collapsed.output)["first_hit"] == [3, 1]
    table = run("score", "recall", "--gt", gt, "--predictions", pred, "--n", "1,4")
    assert "recall@1     50.00" in table.output and "recall@4    100.00" in table.output


def test_score_recall_on_a_dbstruct_mat(tmp_path):
    from datasets.formats import PITTSBURGH_FIELDS
    from tests.test_formats import write_test_dbstruct

    write_test_dbstruct(tmp_path / "pitts_tiny.mat", PITTSBURGH_FIELDS)  # db at x = 0, 10, 20, 30; queries at 0, 30
    np.save(tmp_path / "p.npy", np.array([[2, 0], [1, 3]]))
    out = json.loads(run("score", "recall", "--gt", tmp_path / "pitts_tiny.mat", "--predictions", tmp_path / "p.npy",
                         "--n", "1,2", "--json").output)
    assert out["first_hit"] == [1, 1]  # db 2 is 20 m from query 0, db 1 20 m from query 1
    out = json.loads(run("score", "recall", "--gt", tmp_path / "pitts_tiny.mat", "--predictions", tmp_path / "p.npy",
                         "--n", "1,2", "--threshold", "5", "--json").output)
    assert out["first_hit"] == [2, 2]


def test_recall_on_the_real_tokyo_ground_truth(tmp_path):
    pred = tmp_path / "p.npy"
    np.save(pred, np.tile(np.arange(240), (315, 1)))
    result = run("score", "recall", "--gt", PLACES["tokyo247"], "--predictions", pred, "--panorama-size", "12",
                 "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.output)["n_queries"] == 315
    short = run("score", "recall", "--gt", PLACES["tokyo247"], "--predictions", pred, "--panorama-size", "7")
    assert short.exit_code == 2 and "does not divide the 75984 database images" in short.stderr


COMMITTED = REPO_ROOT / "results" / "synth_places" / "netvlad" / "effl0.untrained.json"


def test_evaluate_refuses_to_replace_a_committed_result_before_any_work(tmp_path, monkeypatch):
    import benchmarks.evaluation.evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("evaluated before refusing")

    monkeypatch.setattr(benchmarks.evaluation.evaluate, "evaluate", no_work)
    weights = tmp_path / "netvlad-untrained.pt"  # its .json names the weights, as `train` writes it
    Path(f"{weights}.json").write_text(json.dumps({"method": "netvlad", "weights": "effl0.untrained"}))
    before = COMMITTED.read_bytes()
    outcome = run("evaluate", "--method", "netvlad", "--weights", weights, "--dataset", "synth_places",
                  "--allow-dirty")
    assert outcome.exit_code == 2
    assert outcome.stderr == ("error: results/synth_places/netvlad/effl0.untrained.json: a committed result, left "
                              "as it is: pass --overwrite to replace it (git diff then shows what changed), or "
                              "--results DIR to write elsewhere\n")
    assert COMMITTED.read_bytes() == before


def test_evaluate_replaces_a_committed_result_only_when_told(tmp_path, monkeypatch):
    import benchmarks.evaluation.evaluate
    import benchmarks.evaluation.results

    monkeypatch.setattr(benchmarks.evaluation.evaluate, "evaluate", lambda *args: load_result(COMMITTED))
    written = []
    monkeypatch.setattr(benchmarks.evaluation.results, "write_result",
                        lambda result, root: written.append(root) or root)
    before = COMMITTED.read_bytes()
    args = ("evaluate", "--method", "netvlad", "--weights", tmp_path / "unnamed.pt", "--dataset", "synth_places",
            "--allow-dirty")
    refused = run(*args)  # the name is known only once the weights are loaded: refused before writing
    assert refused.exit_code == 2 and "a committed result, left as it is" in refused.stderr and not written
    assert COMMITTED.read_bytes() == before
    assert run(*args, "--overwrite").exit_code == 0 and written == [REPO_ROOT / "results"]
    assert run(*args, "--results", "results").exit_code == 0 and written[-1] == Path("results")  # make embedded-results
    assert run(*args, "--results", tmp_path).exit_code == 0 and written[-1] == tmp_path


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_evaluates_each_method_after_its_trainings_and_ends_saying_where_everything_is():
    planned = subprocess.run(["make", "-n", "--no-print-directory", "demo", "DEMO=out/x"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True, env={**os.environ, "MAKEFLAGS": ""}).stdout
    lines = planned.splitlines()
    first_evaluate = next(i for i, line in enumerate(lines) if " -m benchmarks evaluate --method netvlad " in line)
    second_method = next(i for i, line in enumerate(lines) if " -m benchmarks train mscfp " in line)
    assert first_evaluate < second_method  # the first numbers come after the first method, not after all trainings
    summary = "\n".join(lines[-3:])
    assert summary.startswith('echo "== done.') and "out/x/results/<dataset>/<method>/" in summary
    assert "out/x/weights/" in summary and "out/x/tables/" in summary


@pytest.mark.parametrize("command", [("tables",), ("check",), ("plot", "summary")])
@pytest.mark.parametrize("option", ["--results", "--reported"])
def test_a_results_or_reported_folder_that_is_not_there_is_named(command, option, tmp_path):
    outcome = CliRunner().invoke(cli, [*command, option, str(tmp_path / "nowhere")])  # refused before any work
    assert outcome.exit_code == 2
    assert f"Invalid value for '{option}': Directory '{tmp_path / 'nowhere'}' does not exist." in outcome.output
