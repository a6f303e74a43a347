"""Results integrity: runs from a dirty tree are refused unless --allow-dirty (then noted in the result), and
stale_provenance flags a result whose weights or ground truth no longer match what the plugins declare."""
from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation import results
from benchmarks.evaluation.results import (
    DIRTY_NOTE,
    RESULTS_DIR,
    load_result,
    record_dirty,
    require_clean_tree,
    stale_provenance,
)
from tests.test_results import make_result

COMMITTED = sorted(RESULTS_DIR.glob("*/*/*.json"))


@pytest.mark.parametrize(("state", "message"), [(("abc", True), "has uncommitted changes"),
                                                (("unknown", True), "is not a git checkout")])
def test_a_dirty_tree_is_refused_unless_allowed(monkeypatch, state, message):
    monkeypatch.setattr(results, "git_state", lambda: state)
    with pytest.raises(InputError, match=f"the suite {message}.*commit first, or pass --allow-dirty"):
        require_clean_tree(allow_dirty=False)
    require_clean_tree(allow_dirty=True)
    monkeypatch.setattr(results, "git_state", lambda: ("abc", False))
    require_clean_tree(allow_dirty=False)


def test_the_result_of_an_allowed_dirty_run_says_so():
    dirty = replace(make_result(), provenance=replace(make_result().provenance, git_dirty=True))
    with pytest.raises(InputError, match="uncommitted changes when the run ended"):
        record_dirty(dirty, allow_dirty=False)
    noted = record_dirty(dirty, allow_dirty=True)
    assert noted.notes == [DIRTY_NOTE] and record_dirty(noted, allow_dirty=True).notes == [DIRTY_NOTE]
    clean = replace(make_result(), provenance=replace(make_result().provenance, git_dirty=False))
    assert record_dirty(clean, allow_dirty=True) == clean


def test_evaluate_refuses_a_dirty_tree_before_any_work(monkeypatch):
    monkeypatch.setattr(results, "git_state", lambda: ("abc", True))
    outcome = CliRunner().invoke(cli, ["evaluate", "--method", "no-such-method", "--weights", "x",
                                       "--dataset", "synth_places"])
    assert outcome.exit_code == 2 and "has uncommitted changes" in outcome.output  # not "unknown method"


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(RESULTS_DIR)) for p in COMMITTED])
def test_committed_results_match_their_plugins_and_data(path, embedded_root):
    assert stale_provenance(load_result(path), embedded_root) == []


def test_changed_ground_truth_weights_and_plugins_are_flagged(embedded_root, tmp_path):
    committed = load_result(RESULTS_DIR / "synth_places" / "netvlad" / "effl0.untrained.json")
    moved = replace(committed, provenance=replace(committed.provenance, ground_truth_sha256="e" * 64))
    [problem] = stale_provenance(moved, embedded_root)
    assert problem.startswith(f"synth_places/netvlad/effl0.untrained: ground truth sha256 {'e' * 64} differs "
                              f"from the dataset's now ({committed.provenance.ground_truth_sha256})")
    assert stale_provenance(moved, tmp_path) == []  # the dataset is not here: nothing to compare with

    published = replace(committed, weights="vgg16.pitts30k",
                        provenance=replace(committed.provenance, weights_sha256="c" * 64))
    lock = tmp_path / "weights" / "netvlad" / "checksums.lock.json"
    assert stale_provenance(published, tmp_path) == []  # no checksum declared or locked yet
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"Pitts30K_struct.mat": {"sha256": "d" * 64, "size": 1, "url": None}}))
    assert stale_provenance(published, tmp_path) == [
        f"synth_places/netvlad/vgg16.pitts30k: weights sha256 {'c' * 64} differs from the declared {'d' * 64}"]

    assert stale_provenance(replace(committed, protocol="revisited")) == [
        "synth_places/netvlad/effl0.untrained: protocol 'revisited', the dataset now says 'recall'"]
    assert stale_provenance(replace(committed, method="gone", dataset="vanished")) == [
        "vanished/gone/effl0.untrained: method 'gone' is not registered any more",
        "vanished/gone/effl0.untrained: dataset 'vanished' is not registered any more"]


def test_only_code_changes_make_the_tree_dirty(tmp_path):
    from benchmarks.core.provenance import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')   # what a run writes
    assert git_state(tmp_path)[1] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)[1] is True


@pytest.mark.parametrize("plugin", ["methods/newmethod.py", "datasets/newdata.py", "benchmarks/helper.py"])
def test_an_untracked_plugin_makes_the_tree_dirty(tmp_path, plugin):
    from benchmarks.core.provenance import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    for folder in ("methods", "datasets", "benchmarks", "notes"):
        (tmp_path / folder).mkdir()
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    (tmp_path / "methods" / "base.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    (tmp_path / "methods" / "__pycache__").mkdir()
    (tmp_path / "methods" / "__pycache__" / "base.cpython-311.pyc").write_bytes(b"\0")   # ignored
    (tmp_path / "notes" / "todo.txt").write_text("outside the code folders\n")
    assert git_state(tmp_path)[1] is False
    (tmp_path / plugin).write_text("x = 2\n")   # imported by load_plugins, absent from the commit
    assert git_state(tmp_path)[1] is True
