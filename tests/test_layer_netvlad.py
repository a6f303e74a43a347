"""NetVLAD layer and k-means: against a direct loop computation, the paper's alpha, invariances, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.layers.netvlad import NORMALISATIONS, SECOND_CENTROID_RATIO, NetVLAD, kmeans


def unit_rows(x: np.ndarray, axis: int) -> np.ndarray:
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def direct_netvlad(local: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, centroids: np.ndarray,
                   normalisation: str = "per_cluster") -> np.ndarray:
    """(D, N) local descriptors of one image -> (K * D,) NetVLAD vector by explicit loops (not the layer's code)."""
    dim, n = local.shape
    k_count = centroids.shape[0]
    vlad = [[0.0] * dim for _ in range(k_count)]
    for i in range(n):
        x = [float(local[d, i]) for d in range(dim)]
        logits = []
        for k in range(k_count):
            logit = sum(float(weight[k, d]) * x[d] for d in range(dim))
            logits.append(logit + (float(bias[k]) if bias is not None else 0.0))
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        for k in range(k_count):
            a = exps[k] / total
            for d in range(dim):
                vlad[k][d] += a * (x[d] - float(centroids[k, d]))
    if normalisation == "per_cluster":  # intra-normalisation: each cluster's residual sum
        for k in range(k_count):
            norm = math.sqrt(sum(v * v for v in vlad[k]))
            vlad[k] = [v / norm for v in vlad[k]]
    else:  # over the clusters, for each dimension (MSCFP's authors' code)
        for d in range(dim):
            norm = math.sqrt(sum(vlad[k][d] ** 2 for k in range(k_count)))
            for k in range(k_count):
                vlad[k][d] /= norm
    flat = [0.0] * (k_count * dim)
    for d in range(dim):
        for k in range(k_count):
            flat[d * k_count + k] = vlad[k][d]  # d-major layout
    norm = math.sqrt(sum(v * v for v in flat))
    return np.array([v / norm for v in flat])


def random_layer(dim: int, k: int, bias: bool, seed: int = 0) -> NetVLAD:
    torch.manual_seed(seed)
    layer = NetVLAD(dim, k, assignment_bias=bias).double()
    with torch.no_grad():  # non-trivial parameters (a bias far from zero, assignment weights of order 1)
        layer.assignment.weight.copy_(torch.randn(k, dim, dtype=torch.float64) * 2)
        if bias:
            layer.assignment.bias.copy_(torch.randn(k, dtype=torch.float64))
        layer.centroids.copy_(torch.randn(k, dim, dtype=torch.float64) * 0.5)
    return layer


def random_local(batch: int, dim: int, n: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(batch, dim, n, generator=generator, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_forward_equals_direct_loop_computation(bias: bool, normalisation: str) -> None:
    dim, k, n, batch = 5, 3, 7, 2
    layer = random_layer(dim, k, bias)
    layer.normalisation = normalisation
    local = random_local(batch, dim, n)
    with torch.no_grad():
        out = layer(local).numpy()
    weight = layer.assignment.weight.detach().numpy()
    b = layer.assignment.bias.detach().numpy() if bias else None
    centroids = layer.centroids.detach().numpy()
    for j in range(batch):
        expected = direct_netvlad(local[j].numpy(), weight, b, centroids, normalisation)
        np.testing.assert_allclose(out[j], expected, rtol=0, atol=1e-12)


def test_bias_changes_the_output() -> None:
    """The bias really enters the softmax: the same layer with its bias zeroed gives another vector."""
    layer = random_layer(4, 3, True)
    local = random_local(1, 4, 6)
    with torch.no_grad():
        with_bias = layer(local)
        layer.assignment.bias.zero_()
        without = layer(local)
    assert (with_bias - without).abs().max() > 1e-3


def test_hand_computed_single_descriptor() -> None:
    """K = 2, D = 2, one descriptor x = (1, 0), zero assignment weights (a = 1/2 each), c_1 = (0, 1), c_2 = (-1, 0).

    Residuals 1/2 (1, -1) and 1/2 (2, 0), intra-normalised (1, -1)/sqrt(2) and (1, 0); d-major flattening
    [V(1,0), V(2,0), V(1,1), V(2,1)] = [1/sqrt(2), 1, -1/sqrt(2), 0], norm sqrt(2) -> [1/2, 1/sqrt(2), -1/2, 0].
    """
    layer = NetVLAD(2, 2).double()
    with torch.no_grad():
        layer.assignment.weight.zero_()
        layer.centroids.copy_(torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64))
        out = layer(torch.tensor([[[1.0], [0.0]]], dtype=torch.float64))
    expected = torch.tensor([[0.5, 1 / math.sqrt(2), -0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_hand_computed_normalisation_over_clusters() -> None:
    """The example above normalised over the clusters, for each dimension: the residual sums
    V(1) = (1/2, -1/2), V(2) = (1, 0) give (1/2, 1)/(sqrt(5)/2) for d = 0 and (-1/2, 0)/(1/2) for d = 1; d-major
    [1/sqrt(5), 2/sqrt(5), -1, 0], norm sqrt(2) -> [1/sqrt(10), 2/sqrt(10), -1/sqrt(2), 0]."""
    layer = NetVLAD(2, 2, normalisation="over_clusters").double()
    with torch.no_grad():
        layer.assignment.weight.zero_()
        layer.centroids.copy_(torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64))
        out = layer(torch.tensor([[[1.0], [0.0]]], dtype=torch.float64))
    expected = torch.tensor([[1 / math.sqrt(10), 2 / math.sqrt(10), -1 / math.sqrt(2), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_default_normalisation_is_per_cluster_and_unknown_ones_are_refused() -> None:
    assert NetVLAD(4, 2).normalisation == "per_cluster"
    with pytest.raises(ValueError, match="per_cluster"):
        NetVLAD(4, 2, normalisation="per_dimension")


@pytest.mark.parametrize("bias", [False, True])
def test_shape_and_unit_norm(bias: bool) -> None:
    dim, k = 8, 4
    layer = NetVLAD(dim, k, assignment_bias=bias)
    assert layer.output_dim == k * dim
    local = random_local(3, dim, 10).float()
    with torch.no_grad():
        out = layer(local)
    assert out.shape == (3, k * dim)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_batch_invariance(bias: bool) -> None:
    layer = random_layer(6, 4, bias)
    local = random_local(4, 6, 9)
    with torch.no_grad():
        together = layer(local)
        alone = torch.cat([layer(local[j:j + 1]) for j in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
def test_permutation_invariance_over_local_descriptors(bias: bool) -> None:
    layer = random_layer(6, 4, bias)
    local = random_local(2, 6, 11)
    permutation = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(permutation, torch.arange(11))
    with torch.no_grad():
        torch.testing.assert_close(layer(local[:, :, permutation]), layer(local), rtol=0, atol=1e-12)


def initialised(bias: bool, seed: int = 0) -> tuple[NetVLAD, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    dim, k, m = 6, 5, 400
    centroids = unit_rows(rng.normal(size=(k, dim)), 1) * rng.uniform(0.5, 1.5, size=(k, 1))
    sample = unit_rows(rng.normal(size=(m, dim)), 1)
    layer = NetVLAD(dim, k, assignment_bias=bias).double()
    alpha = layer.initialise(centroids, sample)
    return layer, centroids, sample, alpha


def top_two_log_ratio(layer: NetVLAD, sample: np.ndarray) -> float:
    """Mean over the sample of ln(a_second / a_first), from the layer's own soft assignment."""
    with torch.no_grad():
        logits = torch.from_numpy(sample) @ layer.assignment.weight.T + layer._bias()
        soft = torch.softmax(logits, dim=1).numpy()
    top = np.sort(soft, axis=1)[:, -2:]
    return float(np.mean(np.log(top[:, 0] / top[:, 1])))


def test_initialise_without_bias_matches_paper_alpha() -> None:
    layer, centroids, sample, alpha = initialised(bias=False)
    assert alpha > 0
    # Paper: alpha such that, on average, the gap between the best and second-best x . c_hat is -ln(0.01) / alpha.
    gaps = []
    for x in sample:
        scores = sorted((float(np.dot(x, c / np.linalg.norm(c))) for c in centroids), reverse=True)
        gaps.append(scores[0] - scores[1])
    assert sum(gaps) / len(gaps) == pytest.approx(-math.log(0.01) / alpha, rel=1e-12)
    np.testing.assert_allclose(layer.assignment.weight.detach().numpy(), alpha * unit_rows(centroids, 1),
                               rtol=1e-12, atol=0)
    assert layer.assignment.bias is None
    np.testing.assert_array_equal(layer.centroids.detach().numpy(), centroids)
    # Equivalently: the second-best assignment is on (log-)average 1/100 of the best.
    assert top_two_log_ratio(layer, sample) == pytest.approx(math.log(SECOND_CENTROID_RATIO), rel=1e-10)
    assert SECOND_CENTROID_RATIO == 0.01


def test_initialise_with_bias_matches_paper_alpha() -> None:
    layer, centroids, sample, alpha = initialised(bias=True)
    assert alpha > 0
    weight = layer.assignment.weight.detach().numpy()
    bias = layer.assignment.bias.detach().numpy()
    np.testing.assert_allclose(weight, 2 * alpha * centroids, rtol=1e-12, atol=0)
    np.testing.assert_allclose(bias, -alpha * (centroids ** 2).sum(1), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(layer.centroids.detach().numpy(), centroids)
    # The soft assignment is then softmax_k(-alpha |x - c_k|^2).
    squared = ((sample[:, None, :] - centroids[None]) ** 2).sum(-1)
    expected = np.exp(-alpha * squared)
    expected /= expected.sum(1, keepdims=True)
    with torch.no_grad():
        soft = torch.softmax(torch.from_numpy(sample) @ layer.assignment.weight.T + layer.assignment.bias, dim=1)
    np.testing.assert_allclose(soft.numpy(), expected, rtol=1e-9, atol=1e-12)
    # alpha: the mean gap between the second and first squared distances is -ln(0.01) / alpha.
    gaps = []
    for row in squared:
        nearest = sorted(row.tolist())
        gaps.append(nearest[1] - nearest[0])
    assert sum(gaps) / len(gaps) == pytest.approx(-math.log(0.01) / alpha, rel=1e-12)
    assert top_two_log_ratio(layer, sample) == pytest.approx(math.log(0.01), rel=1e-10)


def test_initialise_on_a_float32_layer_copies_values() -> None:
    rng = np.random.default_rng(5)
    centroids = rng.normal(size=(3, 4)).astype(np.float32)
    sample = unit_rows(rng.normal(size=(50, 4)), 1).astype(np.float32)
    layer = NetVLAD(4, 3)
    alpha = layer.initialise(centroids, sample)
    assert layer.centroids.dtype == torch.float32
    np.testing.assert_array_equal(layer.centroids.detach().numpy(), centroids)
    np.testing.assert_allclose(layer.assignment.weight.detach().numpy(),
                               alpha * unit_rows(centroids.astype(np.float64), 1), rtol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_gradients_reach_assignment_and_centroids(bias: bool) -> None:
    layer = random_layer(5, 3, bias)
    local = random_local(2, 5, 6)
    target = torch.randn(2, 15, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    (layer(local) * target).sum().backward()
    parameters = {"assignment.weight": layer.assignment.weight, "centroids": layer.centroids}
    if bias:
        parameters["assignment.bias"] = layer.assignment.bias
    assert {name for name, _ in layer.named_parameters()} == set(parameters)
    for name, parameter in parameters.items():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 1e-6, name


@pytest.mark.parametrize("bias", [False, True])
def test_gradients_are_correct(bias: bool) -> None:
    """Analytic gradients against finite differences, with respect to inputs and every parameter."""
    layer = random_layer(3, 2, bias)
    local = random_local(2, 3, 4).requires_grad_(True)
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())

    def run(x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (local, *params))


def separated_blobs(centres: np.ndarray) -> np.ndarray:
    offsets = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [0.5, 0.5], [-0.5, -0.5]])  # mean exactly zero
    return np.concatenate([c + offsets for c in centres]).astype(np.float32)


def matched(found: np.ndarray, centres: np.ndarray) -> bool:
    distance = np.abs(found[:, None, :] - centres[None]).max(-1)
    return bool(distance.min(0).max() < 1e-5 and distance.min(1).max() < 1e-5)


def test_kmeans_is_deterministic_for_a_seed() -> None:
    data = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    first = kmeans(data, 5, seed=3)
    second = kmeans(data, 5, seed=3)
    assert first.shape == (5, 8) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_recovers_two_separated_blobs(seed: int) -> None:
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    assert matched(kmeans(separated_blobs(centres), 2, seed=seed), centres)


def test_kmeans_recovers_four_separated_blobs() -> None:
    # Single-start Lloyd from a random start can settle in a local minimum for k >= 3 (faiss's seeds 2 and 3
    # do here); seed 0 starts in four different blobs.
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    assert matched(kmeans(separated_blobs(centres), 4, seed=0), centres)


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_result_is_a_lloyd_fixed_point(seed: int) -> None:
    """Whatever the start: each centroid is the mean of the descriptors nearest to it."""
    data = separated_blobs(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    found = kmeans(data, 4, seed=seed).astype(np.float64)
    nearest = ((data[:, None, :] - found[None]) ** 2).sum(-1).argmin(1)
    for k in range(4):
        assert (nearest == k).any()
        np.testing.assert_allclose(found[k], data[nearest == k].mean(0), atol=1e-5)


def test_kmeans_needs_at_least_k_descriptors() -> None:
    data = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 4"):
        kmeans(data, 4)
    assert kmeans(np.eye(4, dtype=np.float32), 4).shape == (4, 4)  # exactly k is enough
