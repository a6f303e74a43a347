"""PCAWhitening.fit on data with a known sample covariance: whitening, eigenvalues, N < D, sign convention."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.layers.whitening import EIGENVALUE_EPSILON, PCAWhitening

EIGENVALUES = np.array([9.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1])


def known_covariance_data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 8) data whose sample mean and (ddof=1) sample covariance are exactly ``mean`` and Q diag(EIGENVALUES) Q^T."""
    rng = np.random.default_rng(seed)
    dim = len(EIGENVALUES)
    z = rng.normal(size=(n, dim))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / (n - 1))).T  # now exactly zero mean, identity covariance
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mean = rng.normal(size=dim) * 3
    data = z @ (q * np.sqrt(EIGENVALUES)).T + mean
    return data, mean, q


def fitted(data: np.ndarray, out_dim: int) -> tuple[PCAWhitening, np.ndarray]:
    layer = PCAWhitening(data.shape[1], out_dim).double()
    return layer, layer.fit(data)


def whiten(layer: PCAWhitening, data: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return layer(torch.from_numpy(data)).numpy()


def test_the_test_data_have_the_intended_covariance() -> None:
    data, mean, q = known_covariance_data()
    np.testing.assert_allclose(data.mean(0), mean, atol=1e-12)
    np.testing.assert_allclose(np.cov(data.T), q @ np.diag(EIGENVALUES) @ q.T, atol=1e-10)


@pytest.mark.parametrize("out_dim", [1, 3, 8])
def test_whitened_training_data_have_zero_mean_and_identity_covariance(out_dim: int) -> None:
    data, _, _ = known_covariance_data()
    layer, _ = fitted(data, out_dim)
    white = whiten(layer, data)
    assert white.shape == (len(data), out_dim)
    np.testing.assert_allclose(white.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(white.T).reshape(out_dim, out_dim), np.eye(out_dim), atol=1e-6)


def test_eigenvalues_are_the_top_ones_in_decreasing_order() -> None:
    data, _, _ = known_covariance_data()
    _, eigenvalues = fitted(data, 5)
    assert eigenvalues.shape == (5,)
    np.testing.assert_allclose(eigenvalues, EIGENVALUES[:5], rtol=1e-10)
    assert np.all(np.diff(eigenvalues) < 0)
    by_eigh = np.linalg.eigh(np.cov(data.T))[0][::-1]
    np.testing.assert_allclose(eigenvalues, by_eigh[:5], rtol=1e-10)


def test_weights_are_scaled_sign_fixed_eigenvectors() -> None:
    """Independently: eigh of the covariance, each eigenvector's largest-magnitude entry made positive."""
    data, mean, _ = known_covariance_data()
    layer, _ = fitted(data, 4)
    values, vectors = np.linalg.eigh(np.cov(data.T))
    values, vectors = values[::-1][:4], vectors[:, ::-1][:, :4].T
    for row in vectors:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    expected = vectors / np.sqrt(values + EIGENVALUE_EPSILON)[:, None]
    weight = layer.linear.weight.detach().numpy()
    np.testing.assert_allclose(weight, expected, atol=1e-9)
    np.testing.assert_allclose(layer.linear.bias.detach().numpy(), -expected @ mean, atol=1e-9)
    # x -> diag(1 / sqrt(lambda + eps)) U^T (x - mean) on new points too
    x = np.random.default_rng(7).normal(size=(3, 8))
    np.testing.assert_allclose(whiten(layer, x), (x - mean) @ expected.T, atol=1e-9)


def test_sign_convention_largest_entry_positive_and_fit_invariant_to_negation() -> None:
    data, _, _ = known_covariance_data()
    layer, eigenvalues = fitted(data, 6)
    weight = layer.linear.weight.detach().numpy()
    for row in weight:
        assert row[np.argmax(np.abs(row))] > 0
    negated, negated_eigenvalues = fitted(-data, 6)
    # Negating the data negates the centred data: the same principal directions, sign-fixed the same way.
    np.testing.assert_allclose(negated.linear.weight.detach().numpy(), weight, atol=1e-10)
    np.testing.assert_allclose(negated.linear.bias.detach().numpy(), -layer.linear.bias.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(negated_eigenvalues, eigenvalues, rtol=1e-12)


def test_fit_is_deterministic_and_independent_of_sample_order() -> None:
    data, _, _ = known_covariance_data()
    first, _ = fitted(data, 5)
    second, _ = fitted(data.copy(), 5)
    assert torch.equal(first.linear.weight, second.linear.weight)
    assert torch.equal(first.linear.bias, second.linear.bias)
    shuffled, _ = fitted(data[np.random.default_rng(1).permutation(len(data))], 5)
    torch.testing.assert_close(shuffled.linear.weight, first.linear.weight, rtol=0, atol=1e-10)
    torch.testing.assert_close(shuffled.linear.bias, first.linear.bias, rtol=0, atol=1e-10)


def test_fewer_descriptors_than_dimensions() -> None:
    rng = np.random.default_rng(3)
    n, dim, out_dim = 20, 200, 10
    data = rng.normal(size=(n, dim)) * np.linspace(3, 0.1, dim) + rng.normal(size=dim)
    layer, eigenvalues = fitted(data, out_dim)
    assert layer.linear.weight.shape == (out_dim, dim)
    white = whiten(layer, data)
    np.testing.assert_allclose(white.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(white.T), np.eye(out_dim), atol=1e-6)
    by_eigh = np.linalg.eigh(np.cov(data.T))[0][::-1]
    np.testing.assert_allclose(eigenvalues, by_eigh[:out_dim], rtol=1e-8)
    assert np.all(np.diff(eigenvalues) < 0)
    # the components are orthonormal directions
    directions = layer.linear.weight.detach().numpy() * np.sqrt(eigenvalues + EIGENVALUE_EPSILON)[:, None]
    np.testing.assert_allclose(directions @ directions.T, np.eye(out_dim), atol=1e-10)


def test_float32_layer_fit() -> None:
    data, _, _ = known_covariance_data()
    layer = PCAWhitening(8, 3)
    layer.fit(data.astype(np.float32))
    assert layer.linear.weight.dtype == torch.float32
    with torch.no_grad():
        white = layer(torch.from_numpy(data.astype(np.float32))).double().numpy()
    np.testing.assert_allclose(np.cov(white.T), np.eye(3), atol=1e-4)


def test_needs_more_descriptors_than_output_dimensions() -> None:
    data, _, _ = known_covariance_data()
    layer = PCAWhitening(8, 4)
    with pytest.raises(ValueError, match="more than 4"):
        layer.fit(data[:4])
    layer.fit(data[:5])  # N = out_dim + 1 is enough


def test_output_dimension_cannot_exceed_input() -> None:
    with pytest.raises(ValueError, match="at least"):
        PCAWhitening(8, 9)
    assert PCAWhitening(8, 8).linear.out_features == 8
