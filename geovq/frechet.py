"""Fréchet distance between two sets of feature vectors, each summarised as a Gaussian (FID-style)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F)) in float64 of features (N, F), N >= 2."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (N, F) with N >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982).

    S1 S2 of rank-deficient covariances (fewer samples than features, dead ReLUs) is singular:
    sqrtm then warns or returns inf/NaN, and eps is added to both diagonals, as in pytorch-fid.
    Imaginary parts of the square root are numerical noise and are dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: means {mu1.shape} {mu2.shape}, covariances {s1.shape} {s2.shape}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all() or any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught):
        offset = np.eye(len(s1)) * eps
        with warnings.catch_warnings():  # still ill-conditioned, but now well defined
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    # Rounding can make the result slightly negative for identical sets; a distance is >= 0.
    return float(max(0.0, diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)))


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to features (N_a, F) and (N_b, F)."""
    return frechet_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b), eps=eps)
