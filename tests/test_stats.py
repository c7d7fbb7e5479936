"""geovq.stats.paired_contrast: coverage on crossed seeds x images data, the 1-seed paired t, edge cases."""

import numpy as np
import pytest
from scipy import stats as st

from geovq.stats import paired_contrast

S, N, REPS = 3, 2000, 100

# name: (sigma_seed, sigma_image, sigma_noise)
SETTINGS = {
    "seed-dominated": (1.0, 0.1, 0.1),
    "image-dominated": (0.001, 1.0, 0.1),
    "balanced": (0.03, 1.0, 1.0),
}


def crossed(rng, delta, sa, sb, se, s=S, n=N):
    """d_si = delta + a_s + b_i + e_si."""
    return delta + rng.normal(0, sa, (s, 1)) + rng.normal(0, sb, (1, n)) + rng.normal(0, se, (s, n))


def replicate(setting, delta, seed):
    rng = np.random.default_rng(seed)
    return [paired_contrast(crossed(rng, delta, *SETTINGS[setting])) for _ in range(REPS)]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_interval_covers_known_difference(setting):
    delta = 0.3
    res = replicate(setting, delta, seed=1)
    covered = sum(r["lo"] <= delta <= r["hi"] for r in res)
    assert covered >= 90, f"{setting}: 95 % interval covered delta in {covered}/100"
    assert all(r["method"] == "crossed seeds x images, Satterthwaite t" for r in res)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_zero_difference_rarely_significant(setting):
    res = replicate(setting, 0.0, seed=2)
    rejected = sum(r["p_value"] < 0.05 for r in res)
    assert rejected <= 10, f"{setting}: zero difference called significant in {rejected}/100"
    # p and interval tell the same story
    assert all((r["p_value"] < 0.05) == (r["lo"] > 0 or r["hi"] < 0) for r in res)


def test_interval_not_absurdly_wide():
    sa, sb, se = SETTINGS["image-dominated"]
    true_width = 2 * 1.96 * np.sqrt(sa**2 / S + sb**2 / N)
    width = np.mean([r["hi"] - r["lo"] for r in replicate("image-dominated", 0.3, seed=3)])
    assert 0.5 * true_width <= width <= 2 * true_width, (width, true_width)

    sa, sb, se = SETTINGS["seed-dominated"]  # here the t quantile on ~S-1 df is the honest width
    true_width = 2 * st.t.ppf(0.975, S - 1) * np.sqrt(sa**2 / S + sb**2 / N)
    width = np.mean([r["hi"] - r["lo"] for r in replicate("seed-dominated", 0.3, seed=4)])
    assert 0.5 * true_width <= width <= 2 * true_width, (width, true_width)


def test_se_and_df_match_the_two_way_anova_formula():
    rng = np.random.default_rng(5)
    d = crossed(rng, 0.1, 0.2, 0.5, 0.3, s=4, n=30)
    s, n = d.shape
    g, ms, mi = d.mean(), d.mean(1), d.mean(0)
    ms_seed = n * ((ms - g) ** 2).sum() / (s - 1)
    ms_image = s * ((mi - g) ** 2).sum() / (n - 1)
    r = paired_contrast(d)
    assert r["se"] ** 2 == pytest.approx((ms_seed + ms_image) / (s * n), rel=1e-12)
    v_s, v_i = ms.var(ddof=1) / s, mi.var(ddof=1) / n
    assert r["df"] == pytest.approx((v_s + v_i) ** 2 / (v_s**2 / (s - 1) + v_i**2 / (n - 1)), rel=1e-12)
    half = st.t.ppf(0.975, r["df"]) * r["se"]
    assert (r["lo"], r["hi"]) == pytest.approx((g - half, g + half), rel=1e-12)
    assert r["p_value"] == pytest.approx(2 * st.t.sf(abs(g) / r["se"], r["df"]), rel=1e-12)
    assert (r["n_seeds"], r["n_images"]) == (4, 30)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_one_seed_is_the_paired_t_test(alpha):
    rng = np.random.default_rng(6)
    a = rng.normal(0.02, 0.01, 500)
    b = a - 0.001 + rng.normal(0, 0.005, 500)
    r = paired_contrast((a - b)[None, :], alpha=alpha)
    ref = st.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=1 - alpha)
    assert r["p_value"] == pytest.approx(ref.pvalue, abs=1e-10)
    assert r["lo"] == pytest.approx(ci.low, abs=1e-10)
    assert r["hi"] == pytest.approx(ci.high, abs=1e-10)
    assert r["df"] == 499
    assert r["p_value"] == pytest.approx(st.ttest_1samp(a - b, 0.0).pvalue, abs=1e-10)
    assert r["method"] == "images only (1 seed), paired t"
    assert (r["n_seeds"], r["n_images"]) == (1, 500)


def test_identical_codebooks_give_zero_contrast():
    a = np.random.default_rng(7).random((3, 100))
    r = paired_contrast(a - a)
    assert (r["mean"], r["se"], r["lo"], r["hi"], r["p_value"]) == (0.0, 0.0, 0.0, 0.0, 1.0)
    r1 = paired_contrast(np.zeros((1, 50)))
    assert (r1["mean"], r1["lo"], r1["hi"], r1["p_value"]) == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.1, np.nan, 0.2]]), "NaN"),
        (np.array([[0.1, np.inf, 0.2]]), "non-finite"),
        (np.zeros(5), "shape"),
        (np.zeros((2, 1)), "2 images"),
    ],
)
def test_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        paired_contrast(bad)


def test_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        paired_contrast(np.ones((2, 3)), alpha=1.5)
