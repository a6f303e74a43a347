"""Paired comparison of two runs: per-query measures, the mean difference, bootstrap CI, permutation test."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation.results import RESULTS_DIR, load_result
from benchmarks.reports.compare import compare, per_query
from tests.test_tables import toy_result


def revisited(ap: list[float | None]):
    return toy_result("roxford5k", "revisited", {"map_medium": 0.5}, per_query={"ap_medium": ap})


def test_hand_computed_difference_skips_unscored_queries_and_lists_the_largest_changes():
    c = compare(revisited([0.5, 0.2, None, 1.0]), revisited([0.9, 0.5, None, 0.9]), resamples=4000)
    assert c.measure == "ap_medium" and c.queries.tolist() == [0, 1, 3]
    assert c.difference == pytest.approx(100 * (0.4 + 0.3 - 0.1) / 3)
    assert c.queries[c.most_changed(2)].tolist() == [0, 1]
    # the 8 sign patterns of (0.4, 0.3, -0.1): |sum| >= 0.6 for 4 of them
    assert c.p_value == pytest.approx(0.5, abs=0.03)
    assert c.ci_low < c.difference < c.ci_high


def test_identical_runs_differ_by_nothing():
    a = revisited([0.1, 0.9, 0.4])
    c = compare(a, a)
    assert (c.difference, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_a_consistent_gain_is_significant_and_its_interval_is_tight():
    c = compare(revisited([0.5] * 12), revisited([0.6] * 12))
    assert c.difference == pytest.approx(10.0) and (c.ci_low, c.ci_high) == pytest.approx((10.0, 10.0))
    assert c.p_value < 0.002  # exact: 2 of the 4096 sign patterns are as extreme


def test_the_same_seed_gives_the_same_figures():
    rng = np.random.default_rng(1)
    a, b = revisited(rng.random(30).tolist()), revisited(rng.random(30).tolist())
    first, second = compare(a, b, seed=3), compare(a, b, seed=3)
    assert (first.ci_low, first.ci_high, first.p_value) == (second.ci_low, second.ci_high, second.p_value)


def test_recall_compares_hits_at_n():
    a = toy_result("pitts30k", "recall", {"recall@1": 0.25, "recall@5": 0.75}, per_query={"first_hit": [1, 3, None, 2]})
    b = toy_result("pitts30k", "recall", {"recall@1": 0.5, "recall@5": 0.75}, per_query={"first_hit": [2, 1, 1, None]})
    assert per_query(a, "medium", 5, "A") == ("hit@5", [1.0, 1.0, 0.0, 1.0])
    c = compare(a, b, n=1)
    assert c.measure == "hit@1" and c.a.tolist() == [1, 0, 0, 0] and c.b.tolist() == [0, 1, 1, 0]
    assert c.difference == pytest.approx(25.0)
    with pytest.raises(InputError, match="no recall@10"):
        compare(a, b, n=10)


def test_runs_on_other_queries_are_refused():
    a = revisited([0.5, 0.2])
    other = dataclasses.replace(a, provenance=dataclasses.replace(a.provenance, ground_truth_sha256="e" * 64))
    with pytest.raises(InputError, match="not scored on the same queries"):
        compare(a, other)
    with pytest.raises(InputError, match="2 per-query values, B 3"):
        compare(a, revisited([0.5, 0.2, 0.3]))


def test_committed_runs_means_equal_their_metrics_and_the_cli_reports_them():
    folder = RESULTS_DIR / "synth_landmarks" / "mscfp"
    a_path, b_path = folder / "effl0.untrained.json", folder / "effl0.synth_landmarks.json"
    c = compare(load_result(a_path), load_result(b_path), setting="hard")
    assert c.a.mean() == pytest.approx(load_result(a_path).metrics["map_hard"])
    assert c.b.mean() == pytest.approx(load_result(b_path).metrics["map_hard"])
    outcome = CliRunner().invoke(cli, ["compare", str(a_path), str(b_path), "--json", "--top", "3"])
    assert outcome.exit_code == 0, outcome.output
    payload = json.loads(outcome.output)
    assert payload["measure"] == "ap_medium" and payload["queries"] == 20 and len(payload["most_changed"]) == 3
    assert payload["difference"] == pytest.approx(100 * (load_result(b_path).metrics["map_medium"]
                                                         - load_result(a_path).metrics["map_medium"]))
    assert payload["ci95"][0] < payload["difference"] < payload["ci95"][1]
    text = CliRunner().invoke(cli, ["compare", str(a_path), str(b_path)]).output
    assert "B - A: +15.67 points" in text and "queries that changed most" in text


@pytest.mark.parametrize(("dataset", "option", "message"), [
    ("synth_places", ["--setting", "hard"], "--setting applies to revisited results; this is a recall result "
                                            "(places use --n)"),
    ("synth_landmarks", ["--n", "5"], "--n applies to place-recognition (Recall@N) results; this is a revisited "
                                      "result (use --setting)"),
])
def test_an_option_the_protocol_ignores_is_refused_in_one_line(dataset, option, message):
    folder = RESULTS_DIR / dataset / "netvlad"
    a_path, b_path = folder / "effl0.untrained.json", folder / "effl0_random.untrained.json"
    outcome = CliRunner().invoke(cli, ["compare", str(a_path), str(b_path), *option])
    assert outcome.exit_code == 2
    assert outcome.stderr == f"error: {a_path}: {message}\n"
    defaults = CliRunner().invoke(cli, ["compare", str(a_path), str(b_path), "--resamples", "100"])
    assert defaults.exit_code == 0, defaults.output  # the default --setting and --n stay accepted
    explicit_default = ["--setting", "medium"] if option[0] == "--setting" else ["--n", "1"]
    assert CliRunner().invoke(cli, ["compare", str(a_path), str(b_path), *explicit_default]).exit_code == 2
