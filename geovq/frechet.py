"""Distances between two sets of feature vectors: Fréchet (FID-style), with a bootstrap interval, and kernel (KID)."""

from __future__ import annotations

import numpy as np

BOOTSTRAP = 100  # resamples of a Fréchet interval (100: the default run pays 2 s per set for it)
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # the defaults of torchmetrics and torch-fidelity


def _features(feats, what="features") -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{what} must be (N, F) with N >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf")
    return x


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F)) in float64 of features (N, F), N >= 2."""
    x = _features(feats)
    return x.mean(0), np.cov(x, rowvar=False)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982).

    The trace of the square root is taken in the symmetric form tr((S1^1/2 S2 S1^1/2)^1/2), through
    two symmetric eigendecompositions with negative rounding noise clipped to 0: exact for the
    rank-deficient covariances of fewer samples than features or of dead ReLUs, where a general
    ``sqrtm(S1 S2)`` warns or returns NaN (pytorch-fid then adds 1e-6 to both diagonals).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: means {mu1.shape} {mu2.shape}, covariances {s1.shape} {s2.shape}")
    r1 = _psd_sqrt((s1 + s1.T) / 2)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    # Rounding can make the result slightly negative for identical sets; a distance is >= 0.
    return float(max(0.0, diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean))


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to features (N_a, F) and (N_b, F)."""
    return frechet_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def _resampled_stats(x: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of N rows of ``x`` drawn with replacement, as row counts (no copy of x)."""
    n = len(x)
    w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
    mu = w @ x / n
    xc = x - mu
    return mu, (xc.T * w) @ xc / (n - 1)


def frechet_bootstrap(feats_a, feats_b, *, n_boot: int = BOOTSTRAP, level: float = 0.95, seed: int = 0):
    """Bootstrap interval (lo, hi) of the Fréchet distance at this N: both sets' rows resampled with
    replacement ``n_boot`` times (seeded); the ``level`` percentile interval of the resampled
    distances, shifted by their mean excess over the estimate.

    Why shifted: a resample repeats rows, which shrinks the covariances' effective sample size, so
    the resampled distances sit above the estimate (by ~8 % for 128 features at N = 2000, where the
    plain percentile interval lies wholly above the estimate). Shifted by that bootstrap estimate of
    the bias, the interval brackets the estimate with the bootstrap's spread. Like the estimate, it
    keeps FD's own upward bias at finite N: compare distances at one N, with the floor at that N.
    """
    a, b = _features(feats_a), _features(feats_b)
    if not 0 < level < 1 or n_boot < 2:
        raise ValueError(f"frechet_bootstrap: need 0 < level < 1 and n_boot >= 2, got {level}, {n_boot}")
    rng = np.random.default_rng(seed)
    fds = np.array([frechet_from_stats(*_resampled_stats(a, rng), *_resampled_stats(b, rng)) for _ in range(n_boot)])
    lo, hi = np.percentile(fds, [50 * (1 - level), 50 * (1 + level)]) - (fds.mean() - frechet_distance(a, b))
    return float(lo), float(hi)


def polynomial_kernel(x, y, degree: int = 3, coef: float = 1.0) -> np.ndarray:
    """k(x, y) = (x^T y / F + coef)^degree for rows of x (N, F) and y (M, F): (N, M)."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 of two equal-sized sets (m, F) under :func:`polynomial_kernel` (cubic):
    the means of k over distinct pairs within x and within y, minus twice the mean over all x-y pairs."""
    x, y = _features(x), _features(y)
    m = len(x)
    if len(y) != m:
        raise ValueError(f"mmd2_unbiased: sets of {m} and {len(y)} rows; KID compares equal-sized subsets")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / m**2)


def _subset_sums(x, y, ux, uy, block: int = 1024) -> np.ndarray:
    """Sum of k(x_i, y_j) over i in subset s of x and j in subset s of y, for every subset s: the
    subsets are the 0/1 columns of ux (N_x, S) and uy (N_y, S). Row blocks of the kernel, so the
    full (N_x, N_y) matrix is never held; each entry is computed once for all subsets."""
    out = np.zeros(ux.shape[1])
    for i in range(0, len(x), block):
        out += ((polynomial_kernel(x[i : i + block], y) @ uy) * ux[i : i + block]).sum(0)
    return out


def kernel_distance(
    feats_a, feats_b, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): (mean, std) of :func:`mmd2_unbiased` over
    ``subsets`` random subsets of ``m = min(subset_size, N_a // 2, N_b // 2)`` rows of each set (at
    most half a set, so that the std is a spread over distinct subsets, not 0; torchmetrics takes
    min(subset_size, N) and so agrees wherever N >= 2 subset_size).

    As torchmetrics' ``KernelInceptionDistance``: each subset takes the first m rows of a fresh
    permutation of a, then of b; the std is over subsets with ``ddof=0``. Unbiased, so it can be
    slightly negative for two samples of one distribution. The kernel sums of all subsets come from
    one pass over the kernel matrices (indicator vectors), not one kernel per subset.
    """
    a, b = _features(feats_a), _features(feats_b)
    # at most half of each set: subsets of a whole set would all be that set, with a spread of 0
    m = max(2, min(subset_size, len(a) // 2, len(b) // 2))
    rng = np.random.default_rng(seed)
    ua, ub = np.zeros((len(a), subsets)), np.zeros((len(b), subsets))
    for s in range(subsets):
        ua[rng.permutation(len(a))[:m], s] = 1.0
        ub[rng.permutation(len(b))[:m], s] = 1.0
    diag_a = (np.einsum("ij,ij->i", a, a) / a.shape[1] + 1.0) ** 3 @ ua  # k(x, x) over each subset
    diag_b = (np.einsum("ij,ij->i", b, b) / b.shape[1] + 1.0) ** 3 @ ub
    within = _subset_sums(a, a, ua, ua) - diag_a + _subset_sums(b, b, ub, ub) - diag_b
    kids = within / (m * (m - 1)) - 2.0 * _subset_sums(a, b, ua, ub) / m**2
    return float(np.mean(kids)), float(np.std(kids))


def fd_kid(feats, reference, *, seed: int = 0) -> dict:
    """Fréchet distance with its bootstrap interval and KID of one feature set against a reference.

    Returns ``{"fd", "fd_lo", "fd_hi", "kid", "kid_std", "n"}``; both sets must have the same
    number of rows ``n`` (FD's bias depends on it: compare distances at one n only).
    """
    from threadpoolctl import threadpool_limits

    x, ref = _features(feats), _features(reference, "reference features")
    if len(x) != len(ref):
        raise ValueError(f"fd_kid: {len(x)} rows against a reference of {len(ref)}; score sets at one n")
    # Hundreds of (F, F) products and eigendecompositions: one BLAS thread is as fast, and far faster
    # when the cores are shared; and the numbers do not depend on the thread count.
    with threadpool_limits(1, user_api="blas"):
        lo, hi = frechet_bootstrap(x, ref, seed=seed)
        kid, kid_std = kernel_distance(x, ref, seed=seed)
        fd = frechet_distance(x, ref)
    return {"fd": fd, "fd_lo": lo, "fd_hi": hi, "kid": kid, "kid_std": kid_std, "n": len(x)}


def named(scores: dict, what: str) -> dict:
    """:func:`fd_kid`'s scores under the tables' names: ``fd_<what>``, ``fd_<what>_lo``,
    ``fd_<what>_hi``, ``kid_<what>``, ``kid_<what>_std`` (``n`` is left to the caller)."""
    return {
        f"fd_{what}": scores["fd"],
        f"fd_{what}_lo": scores["fd_lo"],
        f"fd_{what}_hi": scores["fd_hi"],
        f"kid_{what}": scores["kid"],
        f"kid_{what}_std": scores["kid_std"],
    }
