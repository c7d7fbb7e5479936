"""geovq.study: summaries over seeds, paired contrasts between quantizers, the written answer."""

import re

import numpy as np
import pandas as pd
import pytest

from geovq import study
from geovq.stats import paired_contrast

M = "\u2212"  # unicode minus
SEEDS = (0, 1, 2)
N_IMG = 40
SIDES = [("riemannian", "geodesic"), ("graph", "geodesic"), ("kmeans", "nearest"), ("vqvae", "nearest")]


def make_per_image(seeds=SEEDS, n=N_IMG, shift=None, rng_seed=0):
    """fmnist/spatial results; side A = base * (1 + shift) so signs are known."""
    rng = np.random.default_rng(rng_seed)
    shift = shift or {"riemannian": -0.05, "graph": 0.0, "kmeans": 0.02, "vqvae": 0.1}
    index = rng.permutation(1000)[:n]  # not 0..n-1: the index is data, not a position
    base = rng.uniform(0.01, 0.03, n)
    out = {}
    for seed in seeds:
        seed_eff = rng.normal(0, 0.001)
        for q, assign in SIDES:
            noise = rng.normal(0, 0.0005, n)
            mse = base * (1 + shift[q]) + seed_eff + noise
            out[("fmnist", "spatial", q, assign, seed)] = {
                "image_index": index.copy(),
                "mse_quant_real": mse,
                "psnr_quant_real": -10 * np.log10(mse),
                "ssim_quant_real": 1 - 10 * mse,
                "mse_quant_cont": np.full(n, np.nan) if q == "vqvae" else 0.5 * mse,
            }
    return out


SPECS = [
    {"a": "riemannian/geodesic", "b": "graph/geodesic", "factor": "edge lengths"},
    {"a": "kmeans/nearest", "b": "vqvae/nearest", "factor": "post-hoc vs end-to-end"},
]


def row(c, contrast, metric):
    r = c[(c["contrast"] == contrast) & (c["metric"] == metric)]
    assert len(r) == 1, (contrast, metric, c[["contrast", "metric"]])
    return r.iloc[0]


# ---------------------------------------------------------------- contrasts


def test_contrast_sign_relative_difference_and_values():
    pi = make_per_image()
    c = study.contrasts(pi, SPECS)
    assert list(c.columns) == study.CONTRAST_COLUMNS
    r = row(c, f"riemannian/geodesic {M} graph/geodesic", "mse_quant_real")
    a = np.stack([pi[("fmnist", "spatial", "riemannian", "geodesic", s)]["mse_quant_real"] for s in SEEDS])
    b = np.stack([pi[("fmnist", "spatial", "graph", "geodesic", s)]["mse_quant_real"] for s in SEEDS])
    ref = paired_contrast(a - b)
    assert r["diff"] < 0 and r["diff_hi"] < 0  # A - B: riemannian is 5 % lower here
    assert r["diff"] == pytest.approx(ref["mean"]) == pytest.approx(a.mean() - b.mean())
    assert (r["diff_lo"], r["diff_hi"], r["p_value"], r["df"]) == pytest.approx(
        (ref["lo"], ref["hi"], ref["p_value"], ref["df"])
    )
    assert (r["a_mean"], r["b_mean"]) == pytest.approx((a.mean(), b.mean()))
    assert r["rel_diff"] == pytest.approx(r["diff"] / b.mean())
    assert r["rel_diff"] == pytest.approx(-0.05, abs=0.01)
    assert (r["rel_lo"], r["rel_hi"]) == pytest.approx((r["diff_lo"] / b.mean(), r["diff_hi"] / b.mean()))
    assert (r["n_seeds"], r["n_images"], r["factor"]) == (3, N_IMG, "edge lengths")
    assert r["method"] == "crossed seeds x images, Satterthwaite t"
    # PSNR goes the other way for a lower MSE
    assert row(c, f"riemannian/geodesic {M} graph/geodesic", "psnr_quant_real")["diff"] > 0
    assert c.attrs["skipped"] == [] and c.attrs["alpha"] == 0.05


def test_per_seed_means_and_agreement_against_a_hand_computation():
    pi = make_per_image(seeds=(0, 1, 2, 3))
    c = study.contrasts(pi, SPECS)
    for contrast, (qa, qb) in ((f"riemannian/geodesic {M} graph/geodesic", ("riemannian", "graph")),):
        r = row(c, contrast, "mse_quant_real")
        a, b = (
            np.stack([pi[("fmnist", "spatial", q, "geodesic", s)]["mse_quant_real"] for s in range(4)])
            for q in (qa, qb)
        )
        by_hand = (a - b).mean(axis=1)
        np.testing.assert_array_equal(study.seed_diffs_of(r), by_hand)  # full precision in the column
        assert r["seeds"] == "0;1;2;3"
        assert r["seeds_agree"] == int((np.sign(by_hand) == np.sign((a - b).mean())).sum())
        assert r["diff"] == pytest.approx(by_hand.mean(), rel=1e-12)  # equal images per seed: mean of means


def test_seeds_that_disagree_are_reported_so():
    """Two seeds say lower, two higher: the estimate's sign has 2 of 4, and the sentence says so."""
    pi = make_per_image(seeds=(0, 1, 2, 3), shift={"riemannian": 0.0, "graph": 0.0, "kmeans": 0.0, "vqvae": 0.0})
    for seed, sign in zip(range(4), (-1, -1, 1, 1)):
        a = pi[("fmnist", "spatial", "riemannian", "geodesic", seed)]
        b = pi[("fmnist", "spatial", "graph", "geodesic", seed)]["mse_quant_real"]
        a["mse_quant_real"] = b + sign * (0.002 + 0.001 * seed) + np.random.default_rng(seed).normal(0, 1e-5, len(b))
    c = study.contrasts(pi, SPECS)
    r = row(c, f"riemannian/geodesic {M} graph/geodesic", "mse_quant_real")
    assert r["diff"] > 0 and r["seeds_agree"] == 2 and r["n_seeds"] == 4
    assert r["diff_lo"] < 0 < r["diff_hi"]  # a seed effect this size: no verdict
    s = sentence(study.answer_markdown(c), f"riemannian/geodesic {M} graph/geodesic")
    assert "quant–real MSE higher in 2 of 4 seeds;" in s and "not distinguishable from zero" in s
    assert study.seeds_agreeing([1.0, -2.0, 0.0], 0.0) == 0 and study.seeds_agreeing([1.0, -2.0, 3.0], 1.0) == 2


def test_not_applicable_metrics_are_left_out():
    c = study.contrasts(make_per_image(), SPECS)
    k = c[c["contrast"] == f"kmeans/nearest {M} vqvae/nearest"]
    assert set(k["metric"]) == {"mse_quant_real", "psnr_quant_real", "ssim_quant_real"}
    assert not c[["diff", "diff_lo", "diff_hi", "p_value"]].isna().any().any()
    assert {(x["metric"], x["a"], x["b"]) for x in c.attrs["left_out"]} == {
        ("mse_quant_cont", "kmeans/nearest", "vqvae/nearest")
    }
    assert "vqvae/nearest" in c.attrs["left_out"][0]["reason"]
    r = row(c, f"riemannian/geodesic {M} graph/geodesic", "mse_quant_cont")
    assert r["diff"] < 0


def test_partly_missing_metric_raises():
    pi = make_per_image()
    pi[("fmnist", "spatial", "graph", "geodesic", 1)]["mse_quant_real"][3] = np.nan
    with pytest.raises(ValueError, match=r"mse_quant_real .*graph/geodesic seed 1"):
        study.contrasts(pi, SPECS[:1])


def test_mismatched_image_index_raises():
    pi = make_per_image()
    idx = pi[("fmnist", "spatial", "graph", "geodesic", 2)]["image_index"]
    idx[[0, 1]] = idx[[1, 0]]
    with pytest.raises(ValueError, match=r"riemannian/geodesic and graph/geodesic differ in seed 2"):
        study.contrasts(pi, SPECS[:1])

    pi = make_per_image()  # both sides agree within seed 1 but differ from seed 0
    for q, assign in SIDES:
        pi[("fmnist", "spatial", q, assign, 1)]["image_index"] = np.arange(N_IMG) + 5000
    with pytest.raises(ValueError, match=r"seed 1 differs from seed 0"):
        study.contrasts(pi, SPECS[:1])


def test_skipped_specs_are_reported():
    pi = make_per_image()
    del pi[("fmnist", "spatial", "kmeans", "nearest", 2)]
    specs = SPECS + [{"a": "kmedoids/nearest", "b": "kmeans/nearest", "factor": "medoid vs centroid"}]
    c = study.contrasts(pi, specs)
    assert set(c["contrast"]) == {f"riemannian/geodesic {M} graph/geodesic"}
    reasons = {(s["a"], s["b"]): s["reason"] for s in c.attrs["skipped"]}
    assert set(reasons) == {("kmeans/nearest", "vqvae/nearest"), ("kmedoids/nearest", "kmeans/nearest")}
    assert "different seeds" in reasons[("kmeans/nearest", "vqvae/nearest")]
    assert "no results for kmedoids/nearest" in reasons[("kmedoids/nearest", "kmeans/nearest")]
    assert all(s["dataset"] == "fmnist" and s["variant"] == "spatial" for s in c.attrs["skipped"])
    assert "Not computed" in study.contrasts_markdown(c)


def test_identical_codebooks_give_zero_contrast():
    pi = make_per_image()
    for s in SEEDS:  # graph scored exactly like riemannian
        src = pi[("fmnist", "spatial", "riemannian", "geodesic", s)]
        pi[("fmnist", "spatial", "graph", "geodesic", s)] = {k: v.copy() for k, v in src.items()}
    c = study.contrasts(pi, SPECS[:1])
    assert len(c) == 4
    assert (c[["diff", "diff_lo", "diff_hi", "rel_diff"]] == 0).all().all()
    assert (c["p_value"] == 1.0).all()


def test_single_seed_uses_paired_t():
    c = study.contrasts(make_per_image(seeds=(7,)), SPECS[:1])
    assert (c["method"] == "images only (1 seed), paired t").all()
    assert (c["df"] == N_IMG - 1).all() and (c["n_seeds"] == 1).all()


def test_bad_specs_raise():
    with pytest.raises(ValueError, match="'riemannian'"):
        study.contrasts(make_per_image(), [{"a": "riemannian", "b": "graph/geodesic"}])
    with pytest.raises(ValueError, match="itself"):
        study.contrasts(make_per_image(), [{"a": "graph/geodesic", "b": "graph/geodesic"}])


def test_parse_side():
    assert study.parse_side("riemannian/geodesic") == ("riemannian", "geodesic")
    for bad in ["riemannian", "a/b/c", "/nearest", "kmeans/"]:
        with pytest.raises(ValueError, match=re.escape(repr(bad))) as e:
            study.parse_side(bad)
        assert "\n" not in str(e.value)


def test_contrasts_markdown_is_a_table():
    md = study.contrasts_markdown(study.contrasts(make_per_image(), SPECS))
    lines = md.strip().splitlines()
    assert lines[0].startswith("| dataset") and "diff [lo, hi]" in lines[0] and "seeds × images" in lines[0]
    assert len(lines) == 2 + 7
    assert f"riemannian/geodesic {M} graph/geodesic" in md and f"3 × {N_IMG}" in md


# ---------------------------------------------------------------- summary


def metrics_frame():
    rows = []
    rng = np.random.default_rng(1)
    for q, assign, seeds in [
        ("kmeans", "nearest", (0, 1, 2)),
        ("riemannian", "geodesic", (0, 1, 2)),
        ("vqvae", "nearest", (0,)),
    ]:
        for s in seeds:
            rows.append(
                {
                    "dataset": "fmnist",
                    "variant": "spatial",
                    "quantizer": q,
                    "assign": assign,
                    "seed": s,
                    "mse_quant_real": rng.uniform(0.01, 0.02),
                    "mse_quant_cont": np.nan if q == "vqvae" else rng.uniform(0, 0.01),
                    "test_perplexity": rng.uniform(100, 200),
                    "not_a_key_column": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_summary_matches_groupby():
    df = metrics_frame()
    s = study.summary(df)
    g = df.groupby(study.GROUP_COLUMNS)
    ref_mean, ref_sd = g.mean(numeric_only=True), g.std(ddof=1, numeric_only=True)
    assert len(s) == 3
    for _, r in s.iterrows():
        key = tuple(r[study.GROUP_COLUMNS])
        assert r["n_seeds"] == len(g.get_group(key))
        for col in ["mse_quant_real", "mse_quant_cont", "test_perplexity"]:
            for stat, ref in (("mean", ref_mean), ("sd", ref_sd)):
                want = ref.loc[key, col]
                got = r[f"{col}_{stat}"]
                assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want), (key, col, stat)
    assert "not_a_key_column_mean" not in s.columns and "psnr_quant_real_mean" not in s.columns
    v = s[s["quantizer"] == "vqvae"].iloc[0]
    assert v["n_seeds"] == 1 and np.isnan(v["mse_quant_real_sd"]) and np.isnan(v["mse_quant_cont_mean"])


def test_summary_rejects_duplicate_seeds():
    df = metrics_frame()
    with pytest.raises(ValueError, match="share"):
        study.summary(pd.concat([df, df.iloc[:1]]))


def test_summary_markdown():
    md = study.summary_markdown(study.summary(metrics_frame()))
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 3 and "mse_quant_real" in lines[0]
    k = next(l for l in lines if "kmeans" in l)
    assert re.search(r"0\.0\d{4} ± \d", k), k
    v = next(l for l in lines if "vqvae" in l)
    assert "–" in v


# ---------------------------------------------------------------- answer


def contrast_rows():
    base = {
        "dataset": "fmnist",
        "variant": "spatial",
        "df": 2.1,
        "n_seeds": 3,
        "n_images": 10000,
        "method": "crossed seeds x images, Satterthwaite t",
        "seeds": "0;1;2",
        "seed_diffs": "-2e-4;1e-4;-3e-4",
        "seeds_agree": 2,
    }
    null = {
        **base,
        "contrast": f"riemannian/geodesic {M} graph/geodesic",
        "factor": "edge lengths: decoder-induced vs Euclidean",
        "metric": "mse_quant_real",
        "a_mean": 0.015253,
        "b_mean": 0.015376,
        "diff": -1.23e-4,
        "diff_lo": -3.1e-4,
        "diff_hi": 6.2e-5,
        "rel_diff": -0.008,
        "rel_lo": -0.02,
        "rel_hi": 0.004,
        "p_value": 0.21,
    }
    null_cont = {
        **null,
        "metric": "mse_quant_cont",
        "diff": 2.5e-4,
        "diff_lo": 1.0e-4,
        "diff_hi": 4.0e-4,
        "rel_diff": 0.05,
        "p_value": 0.004,
        "seed_diffs": "2e-4;3e-4;2.5e-4",
        "seeds_agree": 3,
    }
    sig = {
        **base,
        "contrast": f"riemannian/geodesic {M} kmeans/nearest",
        "factor": "",
        "metric": "mse_quant_real",
        "a_mean": 0.0117,
        "b_mean": 0.0156,
        "diff": -0.0039,
        "diff_lo": -0.0045,
        "diff_hi": -0.0033,
        "rel_diff": -0.25,
        "rel_lo": -0.29,
        "rel_hi": -0.21,
        "p_value": 0.0004,
        "seed_diffs": "-0.004;-0.0035;-0.0042",
        "seeds_agree": 3,
    }
    psnr = {**sig, "metric": "psnr_quant_real", "diff": 1.2, "diff_lo": 1.0, "diff_hi": 1.4}
    return pd.DataFrame([null, null_cont, sig, psnr], columns=study.CONTRAST_COLUMNS)


def sentence(md, start):
    return next(l for l in md.splitlines() if l.startswith(f"- {start}"))


def test_answer_sentences():
    md = study.answer_markdown(contrast_rows())
    assert md.startswith("# Answer\n")
    assert "Satterthwaite" in md and "α = 0.05" in md and "seed" in md and "image" in md
    assert "## fmnist, spatial" in md
    s = sentence(md, f"riemannian/geodesic {M} graph/geodesic")
    assert s.startswith(
        f"- riemannian/geodesic {M} graph/geodesic (edge lengths: decoder-induced vs "
        f"Euclidean): quant–real MSE lower in 2 of 3 seeds; {M}1.23e-04 ({M}0.8 %), 95 % CI "
        f"[{M}3.1e-04, 6.2e-05], p = 0.21, 3 seeds × 10000 images — not distinguishable from zero; "
        f"quant–cont MSE higher in 3 of 3 seeds; "
    )
    assert s.endswith("riemannian/geodesic is higher.")
    sig = sentence(md, f"riemannian/geodesic {M} kmeans/nearest")
    assert "lower" in sig and "not distinguishable" not in sig and "PSNR" not in sig
    assert sig.startswith(f"- riemannian/geodesic {M} kmeans/nearest: quant–real MSE lower in 3 of 3 seeds;")


def test_answer_numbers_match_rows():
    """Read the numbers back out of each sentence of a real contrasts() table."""
    c = study.contrasts(make_per_image(n=200), SPECS)
    md = study.answer_markdown(c)
    pat = re.compile(
        r"(quant–\w+ MSE) (lower|higher) in (\d+) of (\d+) seeds; (\S+) \((\S+) %\), 95 % CI \[(\S+), (\S+)\], "
        r"p = (\S+), (\d+) seeds × (\d+) images — ([^;.]+)"
    )
    metric = {"quant–real MSE": "mse_quant_real", "quant–cont MSE": "mse_quant_cont"}
    found = 0
    for contrast in set(c["contrast"]):
        for m in pat.finditer(sentence(md, contrast)):
            r = row(c, contrast, metric[m[1]])
            assert m[2] == ("lower" if r["diff"] < 0 else "higher") and int(m[3]) == r["seeds_agree"]
            assert int(m[4]) == r["n_seeds"]
            num = [float(x.replace(M, "-")) for x in m.groups()[4:9]]
            assert num[0] == pytest.approx(r["diff"], rel=5e-3)
            assert num[1] == pytest.approx(100 * r["rel_diff"], rel=5e-2, abs=0.05)
            assert num[2] == pytest.approx(r["diff_lo"], rel=5e-2)
            assert num[3] == pytest.approx(r["diff_hi"], rel=5e-2)
            assert num[4] == pytest.approx(r["p_value"], rel=5e-2, abs=5e-3)
            assert (int(m[10]), int(m[11])) == (r["n_seeds"], r["n_images"])
            side = contrast.split(f" {M} ")[0]
            want = (
                f"{side} is lower"
                if r["diff_hi"] < 0
                else f"{side} is higher"
                if r["diff_lo"] > 0
                else "not distinguishable from zero"
            )
            assert m[12] == want
            found += 1
    assert found == 3  # riemannian-graph: real + cont; kmeans-vqvae: real only


def test_answer_html_has_the_same_sentences():
    c = contrast_rows()
    md, h = study.answer_markdown(c), study.answer_html(c)
    assert h.startswith("<h1>Answer</h1>")
    for line in md.splitlines():
        if line.startswith("- "):
            assert f"<li>{line[2:]}</li>" in h
    assert "<h2>fmnist, spatial</h2>" in h


def test_answer_refuses_another_alpha():
    c = study.contrasts(make_per_image(), SPECS, alpha=0.1)
    assert "90 % CI" in study.answer_markdown(c, alpha=0.1)
    with pytest.raises(ValueError, match="alpha"):
        study.answer_markdown(c, alpha=0.05)
