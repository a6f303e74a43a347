"""Compact signatures: spec strings, top-d cut, PQ round trip, ADC distances against a direct computation from
the codebooks, and the evaluator recording bytes per image next to (not over) the uncompressed result."""
from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.commands.main import cli
from benchmarks.core.errors import InputError
from benchmarks.evaluation.compression import Compression, PQSearch, leading_dimensions, prepare_search, train_pq
from benchmarks.evaluation.results import load_result
from benchmarks.evaluation.search import ExactSearch, rank_by_inner_product
from methods.netvlad import NetVLADConfig, NetVLADMethod
from methods.weights import save_checkpoint


@pytest.mark.parametrize(("text", "top_d", "pq_m", "dim", "n_bytes"), [
    ("top256", 256, None, 4096, 1024), ("pq32", None, 32, 512, 32), ("top512+pq64", 512, 64, 4096, 64),
    ("pq1", None, 1, 3, 1)])
def test_specs(text: str, top_d: int | None, pq_m: int | None, dim: int, n_bytes: int) -> None:
    spec = Compression.parse(text)
    assert (spec.top_d, spec.pq_m, str(spec)) == (top_d, pq_m, text)
    assert spec.bytes_per_image(dim) == n_bytes
    assert spec.describe(dim)["bytes_per_image"] == n_bytes


@pytest.mark.parametrize("text", ["", "top", "pq", "top0", "pq08", "TOP256", "pq32+top256", "top256+", "+pq8",
                                  "top256pq8", "top256 ", "pq8\n", "top256+pq8+pq8", "opq8"])
def test_bad_specs(text: str) -> None:
    with pytest.raises(ValueError, match="topD, pqM or topD\\+pqM"):
        Compression.parse(text)


@pytest.mark.parametrize(("text", "dim", "message"), [("top512", 256, "cannot keep 512 of 256"),
                                                      ("pq7", 512, "do not split into 7"),
                                                      ("top100+pq8", 512, "100 dimensions do not split")])
def test_specs_that_do_not_fit_the_dimension(text: str, dim: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Compression.parse(text).output_dim(dim)


def test_leading_dimensions_are_cut_and_renormalised() -> None:
    x = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 5.0]])
    np.testing.assert_allclose(leading_dimensions(x, 2), [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    assert leading_dimensions(x, 2).dtype == np.float32


def prototype_data(rng: np.random.Generator, n: int, m: int, dsub: int, prototypes: np.ndarray | None = None,
                   n_prototypes: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(n, m * dsub) vectors whose every sub-vector is one of ``n_prototypes`` of its sub-space; n equal to
    that number uses each prototype once per sub-space (so k-means' initial centroids are all of them)."""
    if prototypes is None:
        prototypes = rng.standard_normal((m, n_prototypes, dsub)).astype(np.float32)
    count = prototypes.shape[1]
    picks = [rng.permutation(count) if n == count else rng.integers(0, count, n) for _ in range(m)]
    return np.concatenate([prototypes[j, picks[j]] for j in range(m)], axis=1), prototypes


def test_pq_is_exact_on_data_with_256_values_per_subspace() -> None:
    rng = np.random.default_rng(0)
    train, prototypes = prototype_data(rng, 256, 4, 3)
    index = train_pq(train, 4)
    other, _ = prototype_data(rng, 1000, 4, 3, prototypes)  # new combinations of the same sub-vectors
    assert index.code_size == 4
    np.testing.assert_array_equal(index.sa_decode(index.sa_encode(other)), other)


def test_pq_round_trip_error_is_small_on_data_with_pq_structure() -> None:
    rng = np.random.default_rng(1)
    clean, _ = prototype_data(rng, 3000, 4, 3, n_prototypes=64)  # k-means' 256 centroids cover 64 clusters
    noise = 0.01 * rng.standard_normal(clean.shape).astype(np.float32)
    noisy = clean + noise
    index = train_pq(noisy, 4)
    error = np.linalg.norm(index.sa_decode(index.sa_encode(noisy)) - noisy, axis=1)
    unstructured = rng.standard_normal(clean.shape).astype(np.float32) * clean.std()
    error_unstructured = np.linalg.norm(index.sa_decode(index.sa_encode(unstructured)) - unstructured, axis=1)
    assert np.median(error) < np.median(np.linalg.norm(noise, axis=1))  # within the noise around prototypes
    assert np.median(error) < 0.05 * np.median(error_unstructured)


def test_fewer_training_vectors_than_centroids_give_a_lossless_codebook() -> None:
    rng = np.random.default_rng(2)
    db = rng.standard_normal((40, 8)).astype(np.float32)
    index = train_pq(db, 2)
    np.testing.assert_array_equal(index.sa_decode(index.sa_encode(db)), db)


def test_adc_distances_equal_a_direct_computation_from_the_codebooks() -> None:
    rng = np.random.default_rng(3)
    db, queries = rng.standard_normal((600, 12)).astype(np.float32), rng.standard_normal((7, 12)).astype(np.float32)
    index = train_pq(db, 4)
    index.add(db)
    centroids = faiss.vector_to_array(index.pq.centroids).reshape(4, 256, 3).astype(np.float64)
    codes = faiss.vector_to_array(index.codes).reshape(600, 4)
    decoded = np.concatenate([centroids[j, codes[:, j]] for j in range(4)], axis=1)  # (600, 12)
    direct = ((queries[:, None, :].astype(np.float64) - decoded[None]) ** 2).sum(axis=2)  # (7, 600)
    distances, ids = index.search(queries, 600)
    np.testing.assert_allclose(distances, np.take_along_axis(direct, ids, axis=1), rtol=1e-5)
    top = PQSearch(index).top_k(queries, 25)
    np.testing.assert_array_equal(top, np.argsort(direct, axis=1, kind="stable")[:, :25])


def test_top_d_search_is_exact_search_of_the_cut_descriptors() -> None:
    rng = np.random.default_rng(4)
    db, queries = rng.standard_normal((300, 16)), rng.standard_normal((9, 16))
    top = prepare_search(db, Compression(top_d=6)).top_k(queries, 20)
    np.testing.assert_array_equal(top, rank_by_inner_product(leading_dimensions(queries, 6),
                                                             leading_dimensions(db, 6))[:, :20])


def test_pq_search_on_a_lossless_codebook_is_exact_search() -> None:
    """Unit vectors: the L2 order of ADC is the inner-product order when the codes decode exactly."""
    rng = np.random.default_rng(5)
    db, _ = prototype_data(rng, 256, 4, 2)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = leading_dimensions(rng.standard_normal((6, 8)), 8)
    np.testing.assert_array_equal(prepare_search(db, Compression(pq_m=4)).top_k(queries, 30),
                                  ExactSearch(db).top_k(queries, 30))


@pytest.mark.slow
def test_evaluate_with_compression_records_bytes_beside_the_uncompressed_result(embedded_root: Path,
                                                                                tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NetVLADMethod(NetVLADConfig(backbone="resnet18", feature_index=3, drop_final_relu=False,
                                        num_clusters=4, whiten_dim=16))
    save_checkpoint(tmp_path / "w.pt", model, "resnet18.test", {})
    results = tmp_path / "results"
    done = CliRunner().invoke(cli, ["evaluate", "--method", "netvlad", "--weights", str(tmp_path / "w.pt"),
                                    "--dataset", "synth_landmarks", "--root", str(embedded_root),
                                    "--results", str(results), "--compress", "top8+pq4", "--allow-dirty"])
    assert done.exit_code == 0, done.output
    path = results / "synth_landmarks" / "netvlad" / "resnet18.test+top8+pq4.json"
    result = load_result(path)
    assert result.weights == "resnet18.test" and result.config["descriptor_dim"] == 16
    assert result.config["compression"] == {"spec": "top8+pq4", "bytes_per_image": 4, "dim": 8,
                                            "pq_trained_on": "database"}
    assert len(result.per_query["ap_medium"]) == 20 and 0 < result.metrics["map_medium"] < 1
    assert not (results / "synth_landmarks" / "netvlad" / "resnet18.test.json").exists()
    # a result file must sit where its compression says
    data = json.loads(path.read_text())
    data["config"]["compression"]["spec"] = "pq8"
    moved = tmp_path / "elsewhere" / "synth_landmarks" / "netvlad" / "resnet18.test+top8+pq4.json"
    moved.parent.mkdir(parents=True)
    moved.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"belongs at <root>/synth_landmarks/netvlad/resnet18.test\+pq8.json"):
        load_result(moved)


def test_the_cli_refuses_a_bad_spec() -> None:
    done = CliRunner().invoke(cli, ["evaluate", "--method", "netvlad", "--weights", "x.pt", "--dataset", "d",
                                    "--compress", "pq"])
    assert done.exit_code == 2 and "topD, pqM or topD+pqM" in done.output
