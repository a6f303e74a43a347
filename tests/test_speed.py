"""The speed benchmark runs and reports its figures with the environment (timings are not asserted)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.speed.metrics import revisited_case


def test_revisited_case_is_a_valid_scoring_problem():
    ranks, easy, hard, junk = revisited_case(n_db=6000, n_queries=3)
    assert ranks.shape == (3, 6000) and all(np.array_equal(np.sort(r), np.arange(6000)) for r in ranks)
    for q in range(3):
        ids = np.concatenate([easy[q], hard[q], junk[q]])
        assert (len(easy[q]), len(hard[q]), len(junk[q])) == (30, 40, 60) and len(np.unique(ids)) == 130
        assert ids.max() < 4993


def test_speed_metrics_json():
    result = CliRunner().invoke(cli, ["speed", "metrics", "--n-db", "5000", "--repeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["revisited"]["n_db"] == 5000 and figures["revisited"]["seconds"] >= 0
    assert figures["recall"]["n_queries"] == 8280 and {"python", "numpy", "platform"} <= figures["environment"].keys()
