"""Paired image metrics (MSE, PSNR, windowed SSIM) and codebook statistics."""

from __future__ import annotations

import numpy as np
import torch


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of images in [0, 1], shape (N,)."""
    return (a - b).pow(2).flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB; identical images give +inf."""
    return 10.0 * torch.log10(data_range**2 / mse(a, b))


def _gaussian_taps(size: int, sigma: float, dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, win: int, sigma: float, dtype) -> torch.Tensor:
    """(n - win + 1, n) matrix whose rows are the Gaussian taps at each valid window position."""
    g = _gaussian_taps(win, sigma, dtype)
    band = torch.zeros(n - win + 1, n, dtype=dtype)
    for i in range(n - win + 1):
        band[i, i : i + win] = g
    return band


def ssim(
    a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) with a Gaussian window, averaged over valid windows and channels.

    With win_size=11 this equals ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=...)`` per channel; smaller windows
    (for images under 11 pixels) use a normalized Gaussian of that many taps. The Gaussian
    window is separable: a banded matrix of ``win`` taps on each side of the five maps (a, b,
    a², b², ab) stacked, in float64.
    """
    a = a.double()
    b = b.double()
    n, c, h, w = a.shape
    win = min(win_size, h, w)
    win -= 1 - win % 2  # odd, as skimage requires
    maps = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (n, 5c, h, w)
    maps = _band(h, win, sigma, a.dtype) @ maps @ _band(w, win, sigma, a.dtype).T  # the valid windows
    mu_a, mu_b, e_aa, e_bb, e_ab = maps.split(c, dim=1)
    s_aa = e_aa - mu_a**2
    s_bb = e_bb - mu_b**2
    s_ab = e_ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return s.flatten(1).mean(1).float()


def codebook_stats(codes: np.ndarray, K: int) -> dict:
    """Usage of a codebook by ``codes`` (any shape, values in [0, K)).

    ``perplexity`` is exp(H) of the code histogram with the plug-in entropy H = -sum p log p;
    ``perplexity_miller_madow`` is exp(H + (m - 1) / (2 N)) with the Miller-Madow correction of H's
    downward bias (Miller 1955; m codes seen among N tokens; both entropies in nats). ``codes_used``
    = m, ``dead_codes`` = K - m, ``usage`` = m / K and ``tokens`` = N. Both estimates read low and
    dead codes read high when N is not much larger than K.
    """
    counts = np.bincount(np.asarray(codes).ravel(), minlength=K).astype(np.float64)
    if len(counts) > K:
        raise ValueError(f"codes contain values >= K={K} (max {len(counts) - 1})")
    n = counts.sum()
    p = counts / n
    nz = p[p > 0]
    used = int((counts > 0).sum())
    h = float(-(nz * np.log(nz)).sum())
    return {
        "perplexity": float(np.exp(h)),
        "perplexity_miller_madow": float(np.exp(h + (used - 1) / (2.0 * n))),
        "codes_used": used,
        "dead_codes": K - used,
        "usage": used / K,
        "tokens": int(n),
    }


PAIRS = ("cont_real", "quant_real", "quant_cont")  # (decoded, reference) pairs scored per image


def per_image_metrics(
    real: torch.Tensor, cont: torch.Tensor, quant: torch.Tensor, *, win_size: int = 11, batch: int = 1000
) -> dict:
    """Per-image MSE, PSNR (dB, capped at 100 for identical images) and SSIM of the continuous
    decode against the real image, the quantized decode against the real image and against the
    continuous decode: {"mse_cont_real": (N,) float64, ...}, nine arrays over the same images."""
    decoded = {"cont": cont, "quant": quant, "real": real}
    out = {}
    for name in PAIRS:
        a, b = (decoded[s] for s in name.split("_"))
        out[f"mse_{name}"] = mse(a, b).double().numpy()
        out[f"psnr_{name}"] = psnr(a, b).clamp(max=100).double().numpy()
        # in batches: float64 maps of every image at once would take GBs
        out[f"ssim_{name}"] = np.concatenate(
            [
                ssim(a[i : i + batch], b[i : i + batch], win_size=win_size).double().numpy()
                for i in range(0, len(a), batch)
            ]
        )
    return out


def active_units(mu: np.ndarray, threshold: float = 0.01) -> int:
    """Latent units whose posterior mean varies over the data: Var_x(E[z_u | x]) > threshold
    (Burda et al. 2016's activity measure, on every unit of the latent (C, H, W))."""
    mu = np.asarray(mu, dtype=np.float64).reshape(len(mu), -1)
    return int((mu.var(axis=0) > threshold).sum())
