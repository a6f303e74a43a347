"""``speed search`` runs and reports its figures with the machine (timings are not asserted)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.speed.search import unit_vectors


def test_unit_vectors_are_unit_float32_and_reproducible():
    x = unit_vectors(1000, 7, seed=3, block_bytes=4 * 7 * 300)
    assert x.dtype == np.float32 and x.shape == (1000, 7)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x, unit_vectors(1000, 7, seed=3, block_bytes=4 * 7 * 300))


def test_speed_search_json_of_a_custom_case():
    result = CliRunner().invoke(cli, ["speed", "search", "--n-db", "3000", "--dim", "16", "--n-queries", "4",
                                      "--k", "10", "--compress", "top8+pq2", "--faiss-defaults", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    case = figures["cases"]["custom"]
    assert (case["n_queries"], case["n_db"], case["dim"], case["k"]) == (4, 3000, 16, 10)
    assert case["data_gib"] == round(3004 * 16 * 4 / 2**30, 3) and case["peak_gib"] > 0
    assert case["seconds"] >= 0 and case["cpu_seconds"] >= 0 and case["faiss_defaults"]["seconds"] >= 0
    assert case["path"] == "float32" and "float32" not in case  # 16-D: no bfloat16 filter, nothing to compare
    assert case["compressed"]["spec"] == "top8+pq2" and case["compressed"]["bytes_per_image"] == 2
    assert {"python", "numpy", "faiss-cpu", "cpu_model", "cpus"} <= figures["environment"].keys()


def test_speed_search_text_names_the_machine():
    result = CliRunner().invoke(cli, ["speed", "search", "--n-db", "500", "--dim", "8", "--n-queries", "2"])
    assert result.exit_code == 0, result.output
    assert "custom: 2 queries x 500 x 8-D, top-100:" in result.output and "faiss 1." in result.output


def test_speed_search_times_the_float32_path_beside_the_bfloat16_filter(monkeypatch):
    monkeypatch.setattr("benchmarks.evaluation.search.BF16_MIN_DIM", 16)
    monkeypatch.setattr("benchmarks.evaluation.search.BF16_MIN_QUERIES", 4)
    monkeypatch.setattr("benchmarks.evaluation.bf16_filter.native_bfloat16", lambda: True)
    result = CliRunner().invoke(cli, ["speed", "search", "--n-db", "3000", "--dim", "16", "--n-queries", "4",
                                      "--k", "10", "--float32"])
    assert result.exit_code == 0, result.output
    assert "bfloat16 filter; float32 " in result.output
