"""The Frechet distance against closed-form cases and scipy's reference formula."""

import numpy as np
import pytest
import scipy.linalg

from lumiere_jax.eval import frechet


def _random_psd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


def test_identical_gaussians_are_at_zero():
    rng = np.random.default_rng(0)
    g = frechet.Gaussian(rng.normal(size=16), _random_psd(rng, 16))
    assert frechet.frechet_distance(g, g) == pytest.approx(0.0, abs=1e-9)


def test_mean_shift_only_is_squared_distance_of_means():
    rng = np.random.default_rng(1)
    sigma = _random_psd(rng, 8)
    mu = rng.normal(size=8)
    shift = rng.normal(size=8)
    d = frechet.frechet_distance(frechet.Gaussian(mu, sigma), frechet.Gaussian(mu + shift, sigma))
    assert d == pytest.approx(float(shift @ shift), rel=1e-9)


def test_diagonal_covariances_closed_form():
    # Commuting (diagonal) covariances: d^2 = |dmu|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    rng = np.random.default_rng(2)
    s1, s2 = rng.uniform(0.1, 3.0, 10), rng.uniform(0.1, 3.0, 10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    d = frechet.frechet_distance(frechet.Gaussian(mu1, np.diag(s1)), frechet.Gaussian(mu2, np.diag(s2)))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert d == pytest.approx(expected, rel=1e-10)


def test_matches_scipy_sqrtm_formula_on_general_covariances():
    rng = np.random.default_rng(3)
    s1, s2 = _random_psd(rng, 12), _random_psd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    ref = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
           - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    d = frechet.frechet_distance(frechet.Gaussian(mu1, s1), frechet.Gaussian(mu2, s2))
    assert d == pytest.approx(ref, rel=1e-8)


def test_singular_covariances_stay_finite_and_non_negative():
    # Fewer samples than features: rank-deficient covariances, where a plain sqrtm goes complex.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 64)), rng.normal(size=(10, 64))
    d = frechet.frechet_distance_features(x, y)
    assert np.isfinite(d) and d >= 0.0
    assert frechet.frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_symmetric():
    rng = np.random.default_rng(5)
    a = frechet.Gaussian(rng.normal(size=6), _random_psd(rng, 6))
    b = frechet.Gaussian(rng.normal(size=6), _random_psd(rng, 6, rank=3))
    assert frechet.frechet_distance(a, b) == pytest.approx(frechet.frechet_distance(b, a), rel=1e-8)


def test_mismatched_dimensions_raise():
    a = frechet.Gaussian(np.zeros(3), np.eye(3))
    b = frechet.Gaussian(np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="different dimension"):
        frechet.frechet_distance(a, b)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet.fit_gaussian(np.zeros((1, 3)))
