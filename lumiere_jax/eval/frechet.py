"""Frechet distance between Gaussians fitted to feature sets: the math under FID and FVD.

d^2((mu1, S1), (mu2, S2)) = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

The cross term is computed from symmetric matrices only: S1^1/2 by an eigendecomposition, then the
eigenvalues of S1^1/2 S2 S1^1/2 (symmetric positive semi-definite), whose square roots sum to the trace.
This equals tr((S1 S2)^1/2) as FID's reference code writes it, without the non-symmetric matrix square
root that returns complex noise or fails on near-singular covariances (few samples, many features).
Float64 numpy throughout: the distance is a small difference of large traces.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Gaussian(NamedTuple):
    """Mean [D] and covariance [D, D] of a feature set."""

    mu: np.ndarray
    sigma: np.ndarray


def fit_gaussian(features: np.ndarray) -> Gaussian:
    """Mean and unbiased covariance of features [N, D]; needs N >= 2."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2 samples, got shape {x.shape}.")
    return Gaussian(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)))


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues (round-off) -> 0."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """Squared Frechet (2-Wasserstein) distance between two Gaussians; >= 0, 0 iff they are equal."""
    mu1, mu2 = np.asarray(a.mu, np.float64), np.asarray(b.mu, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(a.sigma, np.float64)), np.atleast_2d(np.asarray(b.sigma, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"Gaussians of different dimension: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {s1.shape} vs {s2.shape}.")
    root1 = _sqrt_psd(s1)
    cross = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((cross + cross.T) / 2)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    d2 = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(d2, 0.0)


def frechet_distance_features(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to feature sets x [N, D] and y [M, D]."""
    return frechet_distance(fit_gaussian(x), fit_gaussian(y))
