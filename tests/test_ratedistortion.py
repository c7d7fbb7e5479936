"""Rate-distortion across K (geovq.ratedistortion): the rate against scipy's entropies, the
intervals against geovq.stats.paired_contrast, the contrasts at every K paired per image."""

import math

import numpy as np
import pytest
from scipy import stats

from geovq import ratedistortion as rd
from geovq.stats import paired_contrast


def test_code_distribution_is_the_krichevsky_trofimov_estimate():
    p = rd.code_distribution(np.array([0, 0, 0, 2]), K=4)
    np.testing.assert_allclose(p, np.array([3.5, 0.5, 1.5, 0.5]) / 6.0)
    assert p.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        rd.code_distribution(np.array([0, 4]), K=4)


def test_mean_rate_is_cells_times_the_cross_entropy():
    """The mean code length of the test images is, per cell, the test codes' entropy plus their KL
    divergence from the fitted distribution (scipy.stats.entropy, an independent computation)."""
    rng = np.random.default_rng(0)
    K, cells = 16, 9
    p_true = rng.dirichlet(np.ones(K))
    fit = rng.choice(K, size=5000, p=p_true)
    test = rng.choice(K, size=(400, 3, 3), p=p_true)
    bits = rd.unigram_rate_bits(fit, test, K)
    assert bits.shape == (400,) and (bits > 0).all()
    q = np.bincount(test.ravel(), minlength=K) / test.size
    p_hat = rd.code_distribution(fit, K)
    cross = stats.entropy(q, base=2) + stats.entropy(q, p_hat, base=2)
    assert bits.mean() == pytest.approx(cells * cross, rel=1e-12)
    # and close to the true entropy for a large fit sample
    assert bits.mean() / cells == pytest.approx(stats.entropy(p_true, base=2), abs=0.05)
    # each image's bits are the sum over its own cells
    assert bits[0] == pytest.approx(-np.log2(p_hat[test[0].ravel()]).sum())


def test_a_code_never_seen_in_fitting_costs_bits_but_is_finite():
    bits = rd.unigram_rate_bits(np.zeros(10, int), np.array([[1]]), K=2)
    assert bits[0] == pytest.approx(-math.log2(0.5 / 11))


def _sweep(q, assign, seed, Ks, real, cont, rate, main_K=16, cells=4, idx=None):
    n = real.shape[1]
    return {
        "dataset": "d",
        "variant": "v",
        "quantizer": q,
        "assign": assign,
        "seed": seed,
        "K": list(Ks),
        "cells": cells,
        "main_K": main_K,
        "image_index": np.arange(n) if idx is None else idx,
        "codes_used": np.array(Ks),
        "rate_bits": rate,
        "mse_quant_real": real,
        "mse_quant_cont": cont,
    }


def _values(rng, nK, n, loc):
    return loc + rng.normal(0, 0.1, (nK, n)) + rng.normal(0, 0.05, (nK, 1))


def test_summary_intervals_are_the_crossed_intervals_of_the_values():
    rng = np.random.default_rng(1)
    Ks, n = [4, 16], 50
    sweeps = []
    for seed in (2, 0, 1):  # any order in, by seed out
        sweeps.append(
            _sweep("a", "nearest", seed, Ks, _values(rng, 2, n, 1), _values(rng, 2, n, 0.5), _values(rng, 2, n, 9))
        )
        vq = _values(rng, 1, n, 0.8)
        sweeps.append(_sweep("vq", "nearest", seed, [16], vq, np.full((1, n), np.nan), _values(rng, 1, n, 9)))
    df = rd.summary(sweeps)
    assert list(df.columns) == rd.SUMMARY_COLUMNS
    assert list(zip(df.quantizer, df.K)) == [("a", 4), ("a", 16), ("vq", 16)]
    assert list(df.main_K) == [False, True, True]
    assert list(df.fixed_rate_bits) == [8.0, 16.0, 16.0]
    by_seed = sorted((s for s in sweeps if s["quantizer"] == "a"), key=lambda s: s["seed"])
    vals = np.stack([s["mse_quant_real"][1] for s in by_seed])
    ref = paired_contrast(vals)
    row = df.iloc[1]
    assert (row.mse_quant_real, row.mse_quant_real_lo, row.mse_quant_real_hi) == pytest.approx(
        (ref["mean"], ref["lo"], ref["hi"])
    )
    assert row.n_seeds == 3 and row.n_images == n and row.method == ref["method"]
    vq = df.iloc[2]
    assert np.isnan(vq.mse_quant_cont) and np.isnan(vq.mse_quant_cont_lo) and np.isfinite(vq.mse_quant_real)
    md = rd.summary_markdown(df)
    assert md.count("\n") == len(df) + 1 and "16 (main)" in md


def test_summary_refuses_unpaired_seeds():
    rng = np.random.default_rng(2)
    v = _values(rng, 1, 5, 1)
    a = _sweep("a", "nearest", 0, [16], v, v, v)
    b = _sweep("a", "nearest", 1, [16], v, v, v, idx=np.arange(5) + 1)
    with pytest.raises(ValueError, match="different test images"):
        rd.summary([a, b])
    with pytest.raises(ValueError, match="appears twice"):
        rd.summary([a, dict(a)])


def test_contrasts_at_every_k_are_paired_differences():
    rng = np.random.default_rng(3)
    Ks, n = [4, 16], 40
    sweeps = []
    for seed in (0, 1):
        base = _values(rng, 2, n, 1.0)
        sweeps.append(_sweep("a", "geodesic", seed, Ks, base - 0.1, base - 0.2, _values(rng, 2, n, 9)))
        sweeps.append(_sweep("b", "nearest", seed, Ks, base, base, _values(rng, 2, n, 10)))
        sweeps.append(_sweep("vq", "nearest", seed, [16], base[1:], np.full((1, n), np.nan), _values(rng, 1, n, 9)))
    specs = [
        {"a": "a/geodesic", "b": "b/nearest", "factor": "f"},
        {"a": "vq/nearest", "b": "b/nearest"},
        {"a": "x/nearest", "b": "b/nearest"},
    ]
    c = rd.contrasts_at_k(sweeps, specs)
    assert list(c.columns) == rd.CONTRAST_COLUMNS
    ab = c[c.contrast == "a/geodesic − b/nearest"]
    assert sorted(zip(ab.K, ab.metric)) == sorted((k, m) for k in Ks for m in rd.DISTORTIONS)
    real = ab[ab.metric == "mse_quant_real"]
    np.testing.assert_allclose(real["diff"], -0.1)  # exactly paired: per-image noise cancels
    np.testing.assert_allclose(ab[ab.metric == "mse_quant_cont"]["diff"], -0.2)
    # the VQ-VAE at its one K, quant-real only (it has no continuous decode)
    vq = c[c.contrast == "vq/nearest − b/nearest"]
    assert list(zip(vq.K, vq.metric)) == [(16, "mse_quant_real")]
    d = np.stack([s["mse_quant_real"][0] for s in sweeps if s["quantizer"] == "vq"]) - np.stack(
        [s["mse_quant_real"][1] for s in sweeps if s["quantizer"] == "b"]
    )
    ref = paired_contrast(d)
    assert (vq.iloc[0].diff_lo, vq.iloc[0].diff_hi) == pytest.approx((ref["lo"], ref["hi"]))
    assert "−0.1" in rd.contrasts_markdown(c)
