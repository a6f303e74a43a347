"""RunResult: schema round trip, atomic writes, validation errors, and every committed result loads."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.core.errors import InputError
from benchmarks.core.provenance import environment, git_state
from benchmarks.evaluation.metrics import revisited_scores
from benchmarks.evaluation.results import RESULTS_DIR, Provenance, RunResult, load_result, metrics_of, write_result

COMMITTED = sorted(RESULTS_DIR.glob("*/*/*.json"))


def make_result() -> RunResult:
    scores = revisited_scores(np.array([[3, 1, 2, 0], [3, 0, 1, 2]]), [[0], []], [[1], [3]], [[2], []], n_db=4)
    metrics, per_query = metrics_of(scores)
    commit, dirty = git_state()
    prov = Provenance(git_commit=commit, git_dirty=dirty, weights_sha256="a" * 64, dataset_manifest_sha256=None,
                      ground_truth_sha256="b" * 64, descriptor_sha256=None, environment=environment(), seed=0,
                      date="2026-11-22T07:00:00+00:00", wall_time_s=1.5, command="python -m benchmarks evaluate")
    return RunResult(method="toy", weights="resnet50.untrained", dataset="tiny", protocol="revisited",
                     config={"dim": 8}, metrics=metrics, per_query=per_query, provenance=prov)


def test_metric_keys_follow_the_convention():
    metrics, per_query = metrics_of(revisited_scores(np.array([[3, 1, 2, 0]]), [[0]], [[1]], [[2]], n_db=4))
    assert set(metrics) == {f"{m}_{d}" for m in ("map", "mp@1", "mp@5", "mp@10") for d in ("easy", "medium", "hard")}
    assert metrics["map_medium"] == pytest.approx(5 / 12) and per_query["ap_easy"] == [0.25]
    assert metrics["map_hard"] == 0.25 and metrics["mp@5_medium"] == pytest.approx(2 / 3)


def test_round_trip_is_atomic_and_exact(tmp_path):
    result = make_result()
    path = write_result(result, tmp_path)
    assert path == tmp_path / "tiny" / "toy" / "resnet50.untrained.json"
    assert load_result(path) == result
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert json.loads(path.read_text())["per_query"]["ap_easy"] == [0.25, None]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema_version=0), "schema_version 0 is not 1"),
        (lambda d: d["metrics"].update(map_medium=41.7), "is not a fraction"),
        (lambda d: d["metrics"].update(mAP=0.5), "metric key 'mAP'"),
        (lambda d: d["provenance"].pop("git_commit"), "provenance fields"),
        (lambda d: d["provenance"].update(trunk_initialisation="imagenet"), "trunk_initialisation must be null"),
        (lambda d: d["provenance"].update(date="2026-11-22 07:00"), "ISO 8601 with a time zone"),
        (lambda d: d["provenance"].update(ground_truth_sha256=None), "ground_truth_sha256 must be a sha256"),
        (lambda d: d.update(method="DOLG"), "method must be a lowercase id"),
        (lambda d: d.update(dataset="other"), "the file belongs at <root>/other/toy/resnet50.untrained.json"),
    ],
)
def test_invalid_results_are_refused_naming_the_field(tmp_path, change, message):
    path = write_result(make_result(), tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message) as error:
        load_result(path)
    assert str(path) in str(error.value)


def test_what_training_started_from_round_trips_and_older_results_without_it_load(tmp_path):
    started = {"name": "efficientnet_lite0.in1k", "sha256": "c" * 64}
    result = replace(make_result(), provenance=replace(make_result().provenance, trunk_initialisation=started))
    path = write_result(result, tmp_path)
    assert load_result(path).provenance.trunk_initialisation == started
    data = json.loads(path.read_text())
    del data["provenance"]["trunk_initialisation"]  # as results written before the field existed
    path.write_text(json.dumps(data))
    assert load_result(path).provenance.trunk_initialisation is None


def test_an_invalid_result_is_never_written(tmp_path):
    bad = replace(make_result(), metrics={"map_medium": 1.5})
    with pytest.raises(InputError, match="not a fraction"):
        write_result(bad, tmp_path)
    assert not any(tmp_path.rglob("*"))


def test_truncated_json_is_named(tmp_path):
    path = tmp_path / "tiny" / "toy" / "resnet50.untrained.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"method": "toy", ')
    with pytest.raises(InputError, match="not valid JSON"):
        load_result(path)


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(RESULTS_DIR)) for p in COMMITTED])
def test_every_committed_result_loads(path: Path):
    assert load_result(path).relative_path() == path.relative_to(RESULTS_DIR)


@pytest.mark.parametrize(("method", "trained_on", "metric", "gain"), [
    ("netvlad", "synth_places", "recall@1", 0.10), ("mscfp", "synth_landmarks", "map_medium", 0.05),
    ("remap", "synth_landmarks", "map_medium", 0.05), ("dolg", "synth_landmarks", "map_medium", 0.20)])
def test_committed_training_beats_its_imagenet_start_on_its_own_domain(method, trained_on, metric, gain):
    """The committed embedded runs (``make embedded-results``): each method's minute of training on its training
    split raises its test split's number over the ImageNet trunk it started from (k-means / KL weights + PCA)."""
    folder = RESULTS_DIR / trained_on / method
    trained = load_result(folder / f"effl0.{trained_on}.json").metrics
    untrained = load_result(folder / "effl0.untrained.json").metrics
    assert trained[metric] > untrained[metric] + gain


@pytest.mark.parametrize("method", ["netvlad", "mscfp", "remap", "dolg"])
def test_committed_imagenet_trunk_clears_a_random_one_by_a_wide_margin(method):
    """On the real photographs, the ImageNet EfficientNet-Lite0 lifts every method's mAP Medium by over 30 points
    above the same method on a random trunk of the same kind."""
    folder = RESULTS_DIR / "photo_landmarks" / method
    real = load_result(folder / "effl0.untrained.json").metrics
    random = load_result(folder / "effl0_random.untrained.json").metrics
    assert real["map_medium"] > random["map_medium"] + 0.30
