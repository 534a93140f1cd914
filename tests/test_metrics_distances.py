"""Frechet distance and KID against closed forms, a reference implementation and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from genlab.errors import GenlabError
from genlab.metrics.distances import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()  # 5 + (4 + 1 + 0)
    assert (
        frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected) == pytest.approx(10.0)
    )


def test_frechet_distance_agrees_with_the_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_is_stable_for_near_singular_covariances():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(16, 3))  # rank 3 in 16 dimensions
    s = a @ a.T
    d = frechet_distance(np.zeros(16), s, np.zeros(16), s + 1e-12 * np.eye(16))
    assert np.isfinite(d) and 0.0 <= d < 1e-4


def test_fid_is_near_zero_for_one_distribution_and_grows_with_noise():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(20000, 4))
    other = rng.normal(size=(20000, 4))
    assert fid_from_features(real, other) < 0.01
    values = [
        fid_from_features(real, other + rng.normal(scale=s, size=other.shape)) for s in (0.0, 0.5, 1.0, 2.0)
    ]
    assert values == sorted(values) and values[-1] > 1.0


def test_statistics_are_mean_and_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = feature_statistics(x)
    assert np.allclose(mu, [2.0, 2.0])
    assert np.allclose(sigma, np.cov(x.T, ddof=1))


def test_kid_is_unbiased_and_detects_a_shift():
    rng = np.random.default_rng(3)
    means = [
        kernel_inception_distance(
            rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subset_size=100, num_subsets=20, seed=k
        )[0]
        for k in range(10)
    ]
    assert abs(np.mean(means)) < 0.01  # centred on 0, not on a positive bias
    shifted, _ = kernel_inception_distance(
        rng.normal(size=(300, 8)), rng.normal(loc=0.5, size=(300, 8)), subset_size=100, num_subsets=20
    )
    assert shifted > 0.05


def test_kid_matches_a_direct_computation_on_one_subset():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    m = 5
    kxx, kyy = k(x, x), k(y, y)
    direct = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * k(x, y).mean()
    mean, std = kernel_inception_distance(x, y, subset_size=5, num_subsets=3)
    assert mean == pytest.approx(direct) and std == pytest.approx(0.0, abs=1e-12)


def test_mismatched_features_are_a_clear_error():
    with pytest.raises(GenlabError, match="same feature extractor"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(GenlabError, match="feature sizes differ"):
        kernel_inception_distance(np.zeros((4, 2)), np.zeros((4, 3)))
