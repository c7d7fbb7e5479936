"""PSNR/SSIM against known values and scikit-image; codebook statistics."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from geovq.metrics import codebook_stats, mse, psnr, ssim


def test_psnr_known_value():
    a = torch.zeros(1, 1, 4, 4)
    b = torch.full((1, 1, 4, 4), 0.1)  # mse = 0.01 -> 20 dB
    assert mse(a, b).item() == pytest.approx(0.01)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-5)
    assert math.isinf(psnr(a, a).item())


@pytest.mark.parametrize("channels,size,win", [(1, 16, 11), (3, 32, 11), (1, 28, 11)])
def test_ssim_matches_skimage(channels, size, win):
    # skimage's Gaussian SSIM always filters with 11 taps (sigma 1.5): equal for win_size=11
    rng = np.random.default_rng(0)
    a = rng.random((2, channels, size, size))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = ssim(torch.from_numpy(a), torch.from_numpy(b), win_size=win).numpy()
    for i in range(2):
        ref = structural_similarity(
            a[i],
            b[i],
            channel_axis=0,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            win_size=win,
        )
        assert ours[i] == pytest.approx(ref, abs=1e-5)


def test_ssim_small_window_brute_force():
    """win_size=7: every valid 7x7 window computed explicitly with normalized Gaussian weights."""
    rng = np.random.default_rng(2)
    a, b = rng.random((10, 10)), rng.random((10, 10))
    g = np.exp(-((np.arange(7) - 3.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    for i in range(4):
        for j in range(4):
            pa, pb = a[i : i + 7, j : j + 7], b[i : i + 7, j : j + 7]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            c1, c2 = 0.01**2, 0.03**2
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    ours = ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], win_size=7).item()
    assert ours == pytest.approx(np.mean(vals), abs=1e-6)


def test_ssim_identity_and_order():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.random((1, 1, 16, 16)))
    assert ssim(a, a).item() == pytest.approx(1.0)
    noisy = [ssim(a, (a + s * torch.randn_like(a)).clamp(0, 1)).item() for s in (0.05, 0.2, 0.5)]
    assert noisy[0] > noisy[1] > noisy[2]


def test_codebook_stats():
    s = codebook_stats(np.arange(8).repeat(3), 8)
    assert s["perplexity"] == pytest.approx(8.0) and s["dead_codes"] == 0 and s["usage"] == 1.0
    s = codebook_stats(np.array([0, 0, 0, 1]), 4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert s["perplexity"] == pytest.approx(math.exp(h)) and s["codes_used"] == 2 and s["dead_codes"] == 2
    # Miller-Madow: H + (m - 1) / (2 N) in nats, m = 2 codes seen among N = 4 tokens
    assert s["perplexity_miller_madow"] == pytest.approx(math.exp(h + 1 / 8)) and s["tokens"] == 4
    with pytest.raises(ValueError, match="K=4"):
        codebook_stats(np.array([0, 5]), 4)


def test_miller_madow_entropy_is_less_biased_than_plug_in_at_small_n():
    # a Zipf-like distribution over 64 codes, 150 tokens a draw (fewer than 3 per code): the plug-in
    # entropy reads low; averaged over 400 seeded draws the corrected one is much closer to the truth
    K, n = 64, 150
    p = 1.0 / np.arange(1, K + 1)
    p /= p.sum()
    h_true = -(p * np.log(p)).sum()
    rng = np.random.default_rng(0)
    stats = [codebook_stats(rng.choice(K, n, p=p), K) for _ in range(400)]
    bias_plugin = np.mean([math.log(s["perplexity"]) for s in stats]) - h_true
    bias_mm = np.mean([math.log(s["perplexity_miller_madow"]) for s in stats]) - h_true
    assert bias_plugin < -0.1  # the known downward bias, ~(m - 1) / (2 N)
    assert abs(bias_mm) < 0.5 * abs(bias_plugin), (bias_plugin, bias_mm)  # -0.22 and -0.085 nats
