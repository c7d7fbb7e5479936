"""Paired statistics for the study: a contrast between two quantizers scored on the same images.

One function, :func:`paired_contrast`, turns a (seeds x images) array of paired per-image
differences into an estimate, a standard error that accounts for both seeds and test images,
a t interval with Welch-Satterthwaite degrees of freedom and a two-sided p-value.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

METHOD_CROSSED = "crossed seeds x images, Satterthwaite t"
METHOD_IMAGES = "images only (1 seed), paired t"


def paired_contrast(d, alpha: float = 0.05) -> dict:
    r"""Mean paired difference with an interval over seeds and test images.

    Parameters
    ----------
    d : array_like, shape (S, N)
        Paired per-image differences ``A - B``: row ``s`` is seed ``s``, column ``i`` is test
        image ``i``; the same images, in the same order, for every seed and both sides. All
        values must be finite (callers drop metrics that do not apply before calling).
    alpha : float, default 0.05
        The interval is the two-sided ``1 - alpha`` interval; the p-value is two-sided.

    Returns
    -------
    dict
        ``mean`` (grand mean of ``d``), ``se``, ``lo``, ``hi`` (the interval), ``df``,
        ``p_value``, ``n_seeds`` (S), ``n_images`` (N) and ``method``: either
        ``"crossed seeds x images, Satterthwaite t"`` (S >= 2) or
        ``"images only (1 seed), paired t"`` (S = 1).

    Raises
    ------
    ValueError
        If ``d`` is not two-dimensional, has fewer than 2 images, contains NaN or infinite
        values, or ``alpha`` is not in (0, 1).

    Notes
    -----
    The design is crossed: every seed scores every test image, so the grand mean
    :math:`\bar d` carries two sampling sources, the seeds (training runs, codebook fits) and the
    test images. For :math:`d_{si} = \delta + a_s + b_i + e_{si}`,

    .. math:: \operatorname{Var}\bar d = \sigma_a^2/S + \sigma_b^2/N + \sigma_e^2/(SN).

    With seed means :math:`m_s` and image means :math:`n_i` the estimate is
    :math:`v_s = \operatorname{var}(m_s)/S`, :math:`v_i = \operatorname{var}(n_i)/N` (both
    ``ddof=1``), :math:`SE = \sqrt{v_s + v_i}`. The sum equals
    :math:`(MS_\text{seed} + MS_\text{image})/(SN)`, whose expectation exceeds the variance
    by :math:`\sigma_e^2/(SN)`: slightly conservative. The interval is
    :math:`\bar d \pm t_{1-\alpha/2,\,\nu}\,SE` with Welch-Satterthwaite degrees of freedom
    :math:`\nu = (v_s + v_i)^2 / (v_s^2/(S-1) + v_i^2/(N-1))`, between :math:`\min(S, N) - 1`
    and :math:`S + N - 2`: with few seeds and a large seed component it is close to
    :math:`S - 1`, and the interval is wide accordingly.

    Why not simpler methods: the seeds share the test images, so a t interval over the S
    per-seed means alone ignores the image sampling (with three seeds whose means happen to
    agree it is far too narrow, and it says nothing about the test set being a sample), while
    a paired t over all S*N values treats them as independent and ignores the seed component.
    A bootstrap over seeds has only 10 distinct resamples with S = 3, too few for a 95 %
    interval.

    With S = 1 only the image component can be estimated: ``v_i = var(d[0], ddof=1)/N``,
    ``df = N - 1``, which is exactly the paired t test (``scipy.stats.ttest_rel``).

    Degenerate case: when the standard error is exactly 0 (e.g. identical codebooks, so ``d``
    is all zeros) there is no sampling variation to test against; ``lo = hi = mean``,
    ``df`` is NaN and ``p_value`` is 1.0 if ``mean == 0`` (no difference), else 0.0.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"paired_contrast: alpha must be in (0, 1), got {alpha!r}")
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"paired_contrast: d must have shape (seeds, images), got shape {d.shape}")
    S, N = d.shape
    if S < 1 or N < 2:
        raise ValueError(f"paired_contrast: need at least 1 seed and 2 images, got shape {d.shape}")
    bad = ~np.isfinite(d)
    if bad.any():
        s, i = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(d).any() else "infinite"
        raise ValueError(
            f"paired_contrast: d has {int(bad.sum())} non-finite ({kind}) values, first at "
            f"seed row {s}, image column {i}; drop metrics that do not apply before calling"
        )

    mean = float(d.mean())
    if S == 1:
        v_s, v_i = 0.0, float(d[0].var(ddof=1)) / N
        method = METHOD_IMAGES
    else:
        v_s = float(d.mean(axis=1).var(ddof=1)) / S
        v_i = float(d.mean(axis=0).var(ddof=1)) / N
        method = METHOD_CROSSED
    var = v_s + v_i
    se = float(np.sqrt(var))
    out = {"mean": mean, "se": se, "n_seeds": int(S), "n_images": int(N), "method": method}

    if se == 0.0:
        out.update(lo=mean, hi=mean, df=float("nan"), p_value=1.0 if mean == 0.0 else 0.0)
        return out

    if S == 1:
        df = float(N - 1)
    else:  # Welch-Satterthwaite, written in weights so tiny variances cannot underflow when squared
        w = v_s / var
        df = float(1.0 / (w**2 / (S - 1) + (1.0 - w) ** 2 / (N - 1)))
    half = float(_st.t.ppf(1.0 - alpha / 2.0, df)) * se
    tstat = mean / se
    out.update(lo=mean - half, hi=mean + half, df=df, p_value=float(2.0 * _st.t.sf(abs(tstat), df)))
    return out
