"""The Snakemake workflow end to end on config/test.yaml, in temporary directories.

Checks what a user relies on: the whole DAG runs; a second run does nothing; a config change
reruns exactly the stages it affects; new datasets/seeds add only their jobs; bad config and
missing data fail with one line naming the key or the places looked; a library edit (its mtime)
reruns exactly the jobs whose stages import it (geovq.codedeps). Same seed, same codes and numbers
in a fresh directory: tests/test_reproducibility.py.
"""

import contextlib
import copy
import json
import os
import re

import numpy as np
import pytest
import yaml

import geovq.quantizers as Q
from conftest import ROOT, planned_jobs, run_snakemake
from geovq.config import validate
from test_data import make_idx_dataset

pytestmark = pytest.mark.slow
TEST_CONFIG = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())


def write_config(path, **changes):
    cfg = copy.deepcopy(TEST_CONFIG)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def done(test_config_run):
    """One complete run of the test config (conftest, shared); later tests only dry-run against it."""
    work, cfg, _ = test_config_run
    return work, cfg


def result_rows(work):
    import pandas as pd

    return pd.read_csv(work / "results" / "tables" / "metrics.csv")


# ---------------------------------------------------------------- what the config implies
VARIANTS, SEEDS, QS = TEST_CONFIG["variants"], TEST_CONFIG["seeds"], TEST_CONFIG["quantizers"]
R = len(TEST_CONFIG["datasets"]) * len(VARIANTS) * len(SEEDS)  # runs: one trained VAE each
GEO = Q.geodesic(QS)
EUC = Q.built_by("euclidean_codebook", QS)
POST = Q.posthoc(QS)
METRICS = Q.metrics(QS)  # the decoder pull-back metrics: one riemannian_lengths job each per run
CFG = validate(copy.deepcopy(TEST_CONFIG))  # with the schema's defaults
EVALS = Q.evaluations(QS, CFG["assignment"]["decode"])  # every (quantizer, assign) a run scores
# the test cells' metrics per run: the VAE decoder's of each kind a post-hoc quantizer assigns with,
# and the VQ-VAE's own
VAE_KINDS = sorted({Q.get(q).assign_metric(CFG["assignment"]["metric"]) for q in POST})
TEST_METRICS = len(VAE_KINDS) + ("vqvae" in QS)


def n_evals(qs, assigns=Q.ASSIGNS):
    """Evaluations per run of quantizers ``qs``: one per (quantizer, assign) scored."""
    return sum(1 for q, a in EVALS if q in qs and a in assigns)


def n_assign(qs, assigns=Q.ASSIGNS):
    """assign_codes jobs per run of quantizers ``qs``: one per assign that is not the quantizer's own."""
    return sum(1 for q, a in EVALS if q in qs and a in assigns and a != Q.get(q).native_assign)


TABLES = {"metrics_table": 1, "study_tables": 1, "all": 1}


def rate_distortion(sweeps, variants=len(VARIANTS)):
    """The jobs of ``sweeps`` rate-distortion sweeps (one per run and quantizer): the table over all,
    and the figure of each of the ``variants`` dataset x variants they belong to."""
    return {"rate_distortion": sweeps, "rate_distortion_table": 1, "rate_distortion_figure": variants}


def after_codes(qs, runs=R, analysis=None, variants=len(VARIANTS)):
    """Every job that follows new codes of quantizers ``qs`` in ``runs`` runs (their codes under the
    other assignment rules, priors, samples, their quality, evaluations, figures, rate-distortion, the
    analysis of the first seed, the tables)."""
    n = runs * len(qs)
    plan = {
        "assign_codes": runs * n_assign(qs),
        "train_prior": n,
        "sample_prior": n,
        "sample_quality": n,
        "evaluate": runs * n_evals(qs),
        "run_figures": runs,
        **rate_distortion(n, variants),
        **TABLES,
    }
    if analysis:  # the first seed's analysis and geometry sheet read codes (and the graph)
        plan["analysis"] = analysis
        plan["geometry"] = analysis
    return plan


def test_full_run_produces_table(done):
    work, _ = done
    df = result_rows(work)
    K = TEST_CONFIG["codebook"]["K"]
    expected = {(v, q, a, s) for v in VARIANTS for q, a in EVALS for s in SEEDS}
    assert set(zip(df.variant, df.quantizer, df["assign"], df.seed)) == expected and len(df) == len(expected)
    assert (df.n_test_images == TEST_CONFIG["codebook"]["test_images"]).all()
    post = df[df.quantizer.isin(POST)]
    assert (post.mse_quant_cont > 0).all() and post.mse_cont_real.notna().all()
    # per image, the three errors are distances between three images: the triangle inequality holds
    # for their root-mean-squares, and PSNR is 10 log10(1 / MSE) of the same pair
    for v, q, a, s in zip(post.variant, post.quantizer, post["assign"], post.seed):
        per = np.load(work / "results" / "synthetic" / v / f"seed{s}" / q / "eval" / a / "per_image.npz")
        qr, cr, qc = (np.sqrt(per[f"mse_{n}"]) for n in ("quant_real", "cont_real", "quant_cont"))
        assert (np.abs(qr - cr) <= qc + 1e-6).all() and (qr <= cr + qc + 1e-6).all(), (v, q, a, s)
        np.testing.assert_allclose(per["psnr_quant_real"], -10 * np.log10(per["mse_quant_real"]), rtol=1e-6)
    assert df.test_perplexity.between(1, K).all() and df.train_perplexity.between(1, K).all()
    assert (df.test_codes_used + df.test_dead_codes == K).all()
    own = df[[a == Q.get(q).native_assign for q, a in zip(df.quantizer, df["assign"])]]
    for col in ("test_bits_per_token", "test_unigram_bits_per_token", "fd_samples_test", "fd_quant_recon_test"):
        assert np.isfinite(own[col]).all() and (own[col] > 0).all(), col
    assert (own.fd_samples_test_lo <= own.fd_samples_test_hi).all() and np.isfinite(own.kid_samples_test).all()
    assert (own.kid_samples_test_std > 0).all()  # a spread over distinct subsets of the n_fd images
    # the table keeps 6 significant digits: each value of a few bits is within 5e-6 of the JSON's
    gain = own.test_unigram_bits_per_token - own.test_bits_per_token
    np.testing.assert_allclose(own.context_gain_bits_per_token, gain, rtol=0, atol=2e-5)
    # one floor and one n for the whole dataset: real test half A against half B
    half = TEST_CONFIG["codebook"]["test_images"] // 2
    assert (df.n_fd == min(TEST_CONFIG["prior"]["sample"]["n"], half)).all() and df.fd_floor_test_halves.nunique() == 1
    assert (df.fd_floor_test_halves > 0).all() and df.classifier_test_accuracy.between(0, 1).all()
    assert (df.test_perplexity_miller_madow >= df.test_perplexity).all() and (df.train_tokens > 0).all()
    other = df.drop(own.index)
    assert len(other) == R * n_assign(QS) and other.test_bits_per_token.isna().all()  # not its prior's codes
    vq = df[df.quantizer == "vqvae"]
    assert vq.mse_cont_real.isna().all() and vq.mse_quant_cont.isna().all() and vq.fd_cont_recon_test.isna().all()
    assert (vq.mse_ze_real > 0).all() and (vq.mse_quant_ze > 0).all()
    md = (work / "results" / "tables" / "metrics.md").read_text()
    assert md.count("| synthetic") == len(df)
    for v in VARIANTS:
        run = work / "results" / "synthetic" / v / "seed0"
        assert (run / "vae" / "losses.csv").read_text().count("\n") == TEST_CONFIG["vae"][v]["epochs"] + 1
        assert (run / "logs" / "train_vae.log").read_text().count("epoch ") == TEST_CONFIG["vae"][v]["epochs"]
        assert (run / "benchmarks" / "train_vae.tsv").exists()


def test_every_evaluation_scores_the_same_test_images_and_per_image_values_add_up(done):
    """Pairing: every quantizer, assignment and seed scores the same test images (and within a run
    every quantizer codes the same train images for its prior); metrics.json holds the per-image means."""
    work, _ = done
    results = work / "results" / "synthetic"
    index, train_index = None, {}
    for v in VARIANTS:
        for s in SEEDS:
            for q, a in EVALS:
                ev = results / v / f"seed{s}" / q / "eval" / a
                per = np.load(ev / "per_image.npz")
                if index is None:
                    index = per["image_index"]
                np.testing.assert_array_equal(per["image_index"], index, err_msg=str(ev))
                assert (str(per["quantizer"]), str(per["assign"]), int(per["seed"])) == (q, a, s)
                metrics = json.loads((ev / "metrics.json").read_text())
                for name in ("mse_quant_real", "psnr_quant_real", "ssim_quant_real", "mse_quant_cont"):
                    if np.isfinite(per[name]).any():
                        assert metrics[name] == pytest.approx(float(per[name].mean()), rel=1e-9), (ev, name)
                    else:
                        assert metrics[name] is None
                codes = np.load(results / v / f"seed{s}" / q / "codes_train.npz")["image_index"]
                np.testing.assert_array_equal(codes, train_index.setdefault((v, s), codes))
    assert len(index) == TEST_CONFIG["codebook"]["test_images"]


def test_every_posthoc_quantizer_is_fitted_on_the_same_train_cells(done):
    work, _ = done
    for v in VARIANTS:
        for s in SEEDS:
            run = work / "results" / "synthetic" / v / f"seed{s}"
            ids = np.load(run / "cells.npz")["ids"]
            n_cells = (
                np.load(run / "vae" / "latents_train.npz")["mu"][0, 0].size * TEST_CONFIG["dataset_options"]["n_train"]
            )
            assert len(ids) == min(TEST_CONFIG["codebook"]["fit_cells"], n_cells) and len(np.unique(ids)) == len(ids)
            np.testing.assert_array_equal(np.load(run / "graph" / "knn.npz")["nodes"], ids)
            for q in POST:
                np.testing.assert_array_equal(
                    np.load(run / q / "codebook.npz")["fit_cell_ids"], ids, err_msg=f"{run}/{q}"
                )
            medoids = np.load(run / "kmedoids" / "codebook.npz")["medoid_cells"]
            assert np.isin(medoids, ids).all()


def test_vqvae_trains_with_its_vaes_settings(done):
    """The baseline shares what the config calls shared: read from both checkpoints."""
    import torch

    work, _ = done
    for v in VARIANTS:
        run = work / "results" / "synthetic" / v / "seed0"
        vae = torch.load(run / "vae" / "model.pt", weights_only=True)
        vq = torch.load(run / "vqvae" / "model.pt", weights_only=True)
        assert vae["arch"] == vq["arch"]
        for key in Q.SHARED_TRAINING:
            assert vq["training"][key] == vae["training"][key], (v, key)
        assert vq["K"] == TEST_CONFIG["codebook"]["K"]


def test_study_tables_answer_every_contrast(done):
    import pandas as pd

    work, _ = done
    tables = work / "results" / "tables"
    summary = pd.read_csv(tables / "summary.csv")
    assert len(summary) == len(VARIANTS) * n_evals(QS) and (summary.n_seeds == len(SEEDS)).all()
    df = result_rows(work)
    row = df[(df.variant == "spatial") & (df.quantizer == "kmeans") & (df["assign"] == "nearest")]
    got = summary[(summary.variant == "spatial") & (summary.quantizer == "kmeans") & (summary["assign"] == "nearest")]
    assert float(got.mse_quant_real_mean.iloc[0]) == pytest.approx(row.mse_quant_real.mean(), rel=1e-4)
    c = pd.read_csv(tables / "contrasts.csv")
    from geovq.config import validate

    specs = validate(copy.deepcopy(TEST_CONFIG))["contrasts"]
    assert set(c.contrast) == {f"{s['a']} \u2212 {s['b']}" for s in specs}
    assert (c.n_seeds == len(SEEDS)).all() and (c.n_images == TEST_CONFIG["codebook"]["test_images"]).all()
    assert (c.diff_lo <= c["diff"]).all() and (c["diff"] <= c.diff_hi).all() and c.p_value.between(0, 1).all()
    # one contrast recomputed from the per-image files
    from geovq.stats import paired_contrast

    ev = work / "results" / "synthetic" / "spatial"
    d = np.stack(
        [
            np.load(ev / f"seed{s}" / "riemannian" / "eval" / "geodesic" / "per_image.npz")["mse_quant_real"]
            - np.load(ev / f"seed{s}" / "graph" / "eval" / "geodesic" / "per_image.npz")["mse_quant_real"]
            for s in SEEDS
        ]
    )
    ref = paired_contrast(d)
    got = c[
        (c.variant == "spatial")
        & (c.contrast == "riemannian/geodesic \u2212 graph/geodesic")
        & (c.metric == "mse_quant_real")
    ].iloc[0]
    assert got["diff"] == pytest.approx(ref["mean"], rel=1e-4, abs=1e-12)
    assert got["diff_lo"] == pytest.approx(ref["lo"], rel=1e-4, abs=1e-12)
    answer = (tables / "answer.md").read_text()
    for spec in specs:
        assert f"{spec['a']} \u2212 {spec['b']}" in answer, spec
    # each seed's own mean paired difference, and how many agree with the estimate, by hand
    mr = c[(c.variant == "spatial") & (c.contrast == "riemannian/metric \u2212 riemannian/geodesic")]
    mr = mr[mr.metric == "mse_quant_real"].iloc[0]
    d = np.stack(
        [
            [
                np.load(ev / f"seed{s}" / "riemannian" / "eval" / a / "per_image.npz")["mse_quant_real"]
                for a in ("metric", "geodesic")
            ]
            for s in SEEDS
        ]
    )
    by_hand = (d[:, 0] - d[:, 1]).mean(axis=1)
    assert mr.seeds == ";".join(map(str, SEEDS))
    np.testing.assert_allclose([float(v) for v in mr.seed_diffs.split(";")], by_hand, rtol=1e-12)
    assert mr.seeds_agree == int((np.sign(by_hand) == np.sign(by_hand.mean())).sum())
    assert (tables / "contrasts.png").stat().st_size > 0


def test_metric_and_decode_codes_recomputed_from_their_inputs(done):
    """The metric rule's codes are the library's argmin over all codes under each test cell's own
    metric (rule test_metrics); decode keeps a code among the metric's top m, the same test images."""
    from geovq.assign import metric_codes
    from geovq.codebook import to_cells

    work, _ = done
    m = CFG["assignment"]["top_m"]
    for v in VARIANTS:
        run = work / "results" / "synthetic" / v / "seed0"
        for q in ("kmeans", "riemannian"):
            own = np.load(run / q / "codes_test.npz")
            metrics = np.load(run / "vae" / f"metrics_test_{Q.get(q).assign_metric(CFG['assignment']['metric'])}.npz")
            mu = np.load(run / "vae" / "latents_test.npz")["mu"]
            hw = mu.shape[2] * mu.shape[3]
            cells = (own["image_index"][:, None] * hw + np.arange(hw)).ravel()
            np.testing.assert_array_equal(metrics["cell_ids"], cells)
            cb = np.load(run / q / "codebook.npz")["codebook"]
            top, _ = metric_codes(to_cells(mu)[cells], metrics["metrics"], cb, m)
            got = np.load(run / q / "codes_test_metric.npz")
            np.testing.assert_array_equal(got["codes"].ravel(), top[:, 0], err_msg=f"{v}/{q}")
            np.testing.assert_array_equal(got["image_index"], own["image_index"])
            dec = np.load(run / q / "codes_test_decode.npz")["codes"].ravel()
            assert (dec[:, None] == top).any(axis=1).all(), f"{v}/{q}: decode left the metric's top {m}"


def test_bench_pipeline_sums_the_benchmarks(done):
    """benchmarks/bench_pipeline.py on the finished run: the job-seconds it sums are the benchmark
    files' own, every job has one, and every job's log states its start-up."""
    import importlib.util
    import sys

    work, _ = done
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "bench_pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_pipeline"] = bench  # its dataclass looks itself up there
    spec.loader.exec_module(bench)
    f = bench.main(["--workdir", str(work)])
    tsvs = sorted(p for p in (work / "results").rglob("*.tsv") if "benchmarks" in p.relative_to(work).parts)
    own = sum(float(t.read_text().splitlines()[1].split("\t")[0]) for t in tsvs)
    assert f["job_s"] == pytest.approx(own, rel=1e-12) and f["jobs"] == len(tsvs)
    assert not f["jobs_without_benchmark"] and not f["startup_estimated"] and 0 < f["startup_share"] < 1
    assert sum(r["jobs"] for r in f["rules"]) == len(tsvs) and f["seeds"] == SEEDS
    assert 0 < f["critical_path_s"] <= f["job_s"] and f["wall_s"] > 0


def test_analysis_and_table_contents(done):
    """The first seed's analyses and the table's order and columns, read back."""
    import pandas as pd

    from geovq.stages.evaluate import TABLE_COLUMNS

    work, _ = done
    K = TEST_CONFIG["codebook"]["K"]
    for v in VARIANTS:
        a = work / "results" / "synthetic" / v / f"seed{SEEDS[0]}" / "analysis"
        comp = pd.read_csv(a / "codebook_comparison.csv")
        assert list(comp.quantizer) == POST
        assert comp.codes_used.between(1, K).all() and comp.perplexity.between(1, K).all()
        errors = comp[["euclidean_error", "graph_geodesic_error", "riemannian_geodesic_error"]]
        assert np.isfinite(errors).all().all() and (errors > 0).all().all()
        # codes that are cells (medoids): a path of Euclidean edges is never shorter than the straight line
        medoids = comp[comp.quantizer != "kmeans"]
        assert (medoids.graph_geodesic_error >= medoids.euclidean_error - 1e-6).all()
        inits = pd.read_csv(a / "kmedoids_inits.csv")
        assert list(inits.init) == TEST_CONFIG["analysis"]["inits"] and (inits.K == K).all()
        assert (inits.objective <= inits.initial_objective + 1e-9).all()
        # the default init's row is the riemannian codebook's own fit, read back, not refitted
        own = pd.read_csv(a.parent / "riemannian" / "objective.csv").objective
        row = inits[inits.init == "kmeans"].iloc[0]
        assert (row.initial_objective, row.objective, row.steps) == (own.iloc[0], own.iloc[-1], len(own))
        assert not (work / "results" / "synthetic" / v / f"seed{SEEDS[1]}" / "analysis").exists()  # first seed only
    df = result_rows(work)
    keys = ["dataset", "variant", "quantizer", "assign", "seed"]
    assert df[keys].equals(df[keys].sort_values(keys).reset_index(drop=True))
    known = [c for c in TABLE_COLUMNS if c in df.columns]
    assert list(df.columns[: len(known)]) == known and known[:5] == keys


def test_rate_distortion_contents(done):
    """tables/rate_distortion.csv read back: every post-hoc quantizer/assign at every K, the VQ-VAE
    at the main K; the main-K point is rule evaluate's per-image values on the same first images
    and seeds; the rate is the fit cells' unigram code length of the run's own test codes."""
    import pandas as pd

    from geovq.artifacts import load_cells, load_codes
    from geovq.codebook import nearest_centroid
    from geovq.config import validate
    from geovq.ratedistortion import unigram_rate_bits

    work, _ = done
    rd = validate(copy.deepcopy(TEST_CONFIG))["rate_distortion"]
    K = TEST_CONFIG["codebook"]["K"]
    Ks = sorted(set(rd["Ks"]) | {K})
    n = min(rd["test_images"], TEST_CONFIG["codebook"]["test_images"])
    tables = work / "results" / "tables"
    df = pd.read_csv(tables / "rate_distortion.csv")
    swept = [(q, a) for q in QS for a in Q.get(q).swept_assigns]  # every rule but decode
    expected = {(v, q, a, k) for v in VARIANTS for q, a in swept for k in (Ks if q in POST else [K])}
    assert set(zip(df.variant, df.quantizer, df["assign"], df.K)) == expected and len(df) == len(expected)
    assert (df.n_seeds == len(SEEDS)).all() and (df.n_images == n).all() and df.main_K.eq(df.K == K).all()
    for col in ("rate_bits", "mse_quant_real"):  # (equal only without spread: a collapsed VQ-VAE's one code)
        assert (df[f"{col}_lo"] <= df[col]).all() and (df[col] <= df[f"{col}_hi"]).all(), col
        assert (df[f"{col}_lo"] < df[f"{col}_hi"]).mean() > 0.9, col
    post = df[df.quantizer.isin(POST)]
    assert (post.mse_quant_cont > 0).all() and df[df.quantizer == "vqvae"].mse_quant_cont.isna().all()
    # four times the codes: less distortion, more bits
    for (v, q, a), g in post.groupby(["variant", "quantizer", "assign"]):
        lo, hi = g[g.K == min(Ks)].iloc[0], g[g.K == max(Ks)].iloc[0]
        assert hi.mse_quant_cont < lo.mse_quant_cont and hi.rate_bits > lo.rate_bits, (v, q, a)
    for v in VARIANTS:
        for q, a in swept:
            row = df[(df.variant == v) & (df.quantizer == q) & (df["assign"] == a) & (df.K == K)].iloc[0]
            per = [
                np.load(work / "results" / "synthetic" / v / f"seed{s}" / q / "eval" / a / "per_image.npz")
                for s in SEEDS
            ]
            np.testing.assert_allclose(row.mse_quant_real, np.mean([p["mse_quant_real"][:n] for p in per]), rtol=1e-5)
            if (q, a) == ("kmeans", "nearest"):  # the rate from the codes and the fit cells, recomputed
                bits = []
                for s in SEEDS:
                    run = work / "results" / "synthetic" / v / f"seed{s}"
                    _, x = load_cells(run / "cells.npz")
                    cb = np.load(run / q / "codebook.npz")["codebook"]
                    codes = load_codes(run / q / "codes_test.npz")["codes"][:n]
                    bits.append(unigram_rate_bits(nearest_centroid(x, cb)[0], codes, K).mean())
                np.testing.assert_allclose(row.rate_bits, np.mean(bits), rtol=1e-5)
        assert (work / "results" / "synthetic" / v / "rate_distortion.png").stat().st_size > 0
    con = pd.read_csv(tables / "rate_distortion_contrasts.csv")
    specs = validate(copy.deepcopy(TEST_CONFIG))["contrasts"]
    in_sweep = {f"{q}/{a}" for q, a in swept}  # every quantizer is configured; decode is not swept
    assert set(con.contrast) == {f"{s['a']} \u2212 {s['b']}" for s in specs if {s["a"], s["b"]} <= in_sweep}
    vq = con.contrast.str.contains("vqvae/")
    assert set(con[~vq].K) == set(Ks) and set(con[vq].K) == {K}  # the VQ-VAE at its one K
    assert (con.diff_lo <= con["diff"]).all() and (con["diff"] <= con.diff_hi).all()


def test_rate_distortion_reads_the_fit_cells_metrics_it_would_compute(done, one_thread):
    """The sweeps of kmeans, kmedoids and graph read their fit cells' metrics (the metric rule's
    rate) from the run's riemannian graph (rules/common.smk fit_metrics_of) instead of computing
    them: what they read is bit for bit what the computation gives (one thread, as the jobs)."""
    from geovq.artifacts import load_cells, load_latents
    from geovq.riemann import cell_metrics, pullback
    from geovq.vqvae import load_decoder

    work, _ = done
    kind = CFG["assignment"]["metric"]
    assert kind in METRICS  # the test config builds that graph: the sweeps must read it
    for v in VARIANTS:
        run = work / "results" / "synthetic" / v / "seed0"
        ids, _ = load_cells(run / "cells.npz")
        mu, _ = load_latents(run / "vae" / "latents_train.npz")
        decode, weight = pullback(load_decoder(run / "vae" / "model.pt"), kind)
        own = cell_metrics(decode, mu, ids, weight=weight, precision=CFG["graph"]["metric_precision"])
        shared = np.load(run / "graph" / f"lengths_{kind}.npz")
        np.testing.assert_array_equal(shared["nodes"], ids)
        np.testing.assert_array_equal(shared["metrics"], own, err_msg=v)
        for q in ("kmeans", "kmedoids", "graph"):
            log = (run / q / "logs" / "rate_distortion.log").read_text()
            assert f"fit cells from results/synthetic/{v}/seed0/graph/lengths_{kind}.npz" in log, (v, q)


def test_geometry_sheet_contents(done):
    """The first seed's geometry sheet, read back: Euclidean edge ratios are 1 and pair ratios >= 1
    (triangle inequality), every pair of quantizers has its agreement, every latent distance its
    neighbourhood overlap with an interval, every pull-back metric its path-integral check."""
    import itertools

    import pandas as pd
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from geovq.config import validate

    work, _ = done
    g = validate(copy.deepcopy(TEST_CONFIG))["geometry"]
    for v in VARIANTS:
        a = work / "results" / "synthetic" / v / f"seed{SEEDS[0]}" / "analysis"
        ratios = pd.read_csv(a / "geometry_ratios.csv")
        assert sorted(zip(ratios.edge_lengths, ratios.kind)) == sorted(
            itertools.product(["euclidean", *METRICS], ["edges", "pairs"])
        )
        euc = ratios.set_index(["edge_lengths", "kind"]).loc["euclidean"]
        assert euc.loc["edges", "q05"] == pytest.approx(1, abs=1e-5) and euc.loc["edges", "q95"] == pytest.approx(
            1, abs=1e-5
        )
        assert euc.loc["pairs", "q05"] >= 1 - 1e-6 and (ratios.n_undefined == 0).all()
        agree = pd.read_csv(a / "label_agreement.csv")
        assert sorted(zip(agree.a, agree.b)) == sorted(itertools.combinations(QS, 2))
        codes = {q: np.load(a.parent / q / "codes_train.npz")["codes"].ravel() for q in QS}
        for row in agree.itertuples():  # the codes of the same train cells, scored independently
            assert row.n == len(codes[row.a])
            assert row.ari == pytest.approx(adjusted_rand_score(codes[row.a], codes[row.b]), abs=1e-9)
            assert row.nmi == pytest.approx(normalized_mutual_info_score(codes[row.a], codes[row.b]), abs=1e-9)
        nbh = pd.read_csv(a / "neighbourhood.csv")
        expected = ["euclidean (straight line)", "graph geodesic (euclidean)"]
        for m in METRICS:
            expected += [f"graph geodesic ({m})", f"{m} metric at the test cell"]
        for target in ("mean image L2", "Bernoulli Hellinger"):
            rows = nbh[nbh.target == target]
            assert list(rows.distance) == expected, target
            ref = rows.overlap.iloc[0]  # every difference is against the straight line
            np.testing.assert_allclose(rows["diff"], rows.overlap - ref, atol=1e-12)
            assert rows["diff"].iloc[0] == 0 and ((rows.diff_lo <= rows["diff"]) & (rows["diff"] <= rows.diff_hi)).all()
        assert ((nbh.lo <= nbh.overlap) & (nbh.overlap <= nbh.hi)).all()
        assert (nbh.overlap > nbh.chance).all()  # every latent distance knows something of the image
        path = pd.read_csv(a / "path_integral.csv")
        assert list(path.metric) == METRICS and (path.n == g["n_edges"]).all() and (path.mean_abs < 0.5).all()
        assert (a / "geometry.png").stat().st_size > 0


def reordered(value):
    """The same config with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    return value


def nothing_to_do(work, cfg):
    proc = run_snakemake(work, "-n", configfile=cfg)
    return "Nothing to be done" in proc.stdout + proc.stderr


def test_second_run_does_nothing(done, tmp_path):
    work, cfg = done
    assert nothing_to_do(work, cfg)
    # the same settings listed in another order are the same settings
    same = tmp_path / "reordered.yaml"
    same.write_text(yaml.safe_dump(reordered(TEST_CONFIG), sort_keys=False))
    assert nothing_to_do(work, same)


def test_codebook_change_reruns_only_codebook_and_after(done, tmp_path):
    work, _ = done
    jobs = planned_jobs(work, write_config(tmp_path / "k.yaml", codebook__K=8))
    assert jobs == {
        "train_vqvae": R,
        "test_metrics": R * ("vqvae" in QS),  # the VQ-VAE's decoder is trained again; the VAE's is not
        "euclidean_codebook": R * len(EUC),
        "geodesic_medoids": R * len(GEO),
        "geodesic_codes": R * len(GEO),
        **after_codes(QS, analysis=len(VARIANTS)),
    }, jobs


def from_the_graph_on():
    """Every job from the kNN graph on, in every run: the geodesic quantizers and what follows them."""
    return {
        "knn_graph": R,
        "riemannian_lengths": R * len(METRICS),
        "geodesic_medoids": R * len(GEO),
        "geodesic_codes": R * len(GEO),
        **after_codes(GEO, analysis=len(VARIANTS)),
    }


def test_graph_k_change_reruns_graph_and_after(done, tmp_path):
    work, _ = done
    jobs = planned_jobs(work, write_config(tmp_path / "g.yaml", graph={**TEST_CONFIG["graph"], "k": 8}))
    assert jobs == from_the_graph_on(), jobs


def test_vae_change_reruns_vae_and_after(done, tmp_path):
    """beta of the spatial VAE: its runs from the VAE on; not the VQ-VAE (beta is not shared) nor
    the vanilla runs; the VQ-VAE's evaluation only for the VAE's reference row it reads."""
    work, _ = done
    spatial = {**TEST_CONFIG["vae"]["spatial"], "beta": 0.5}
    jobs = planned_jobs(work, write_config(tmp_path / "v.yaml", vae__spatial=spatial))
    S = len(SEEDS)
    plan = {
        "train_vae": S,
        "recon_quality": S,
        "train_cells": S,
        "euclidean_codebook": S * len(EUC),
        "knn_graph": S,
        "riemannian_lengths": S * len(METRICS),
        "test_metrics": S * len(VAE_KINDS),
        "geodesic_medoids": S * len(GEO),
        "geodesic_codes": S * len(GEO),
        **after_codes(POST, runs=S, analysis=1, variants=1),
    }
    plan["evaluate"] += S * n_evals(["vqvae"])
    assert jobs == plan, jobs


def job_wildcards(work, cfg):
    """(rule, wildcards dict) of every job a dry run plans."""
    proc = run_snakemake(work, "-n", configfile=cfg)
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
            jobs.append((rule, {}))
        elif line.startswith("wildcards:") and jobs:
            jobs[-1][1].update(kv.split("=", 1) for kv in line[len("wildcards:") :].strip().split(", "))
    return jobs


def test_new_dataset_and_seed_add_only_their_jobs(done, tmp_path):
    work, _ = done
    make_idx_dataset(work / "data" / "MNIST" / "raw", n_train=40, n_test=20)
    both = write_config(tmp_path / "d.yaml", datasets=["synthetic", "mnist"])
    alone = write_config(tmp_path / "mnist.yaml", datasets=["mnist"])
    # exactly what mnist alone needs in an empty directory, plus the tables over both
    fresh = planned_jobs(tmp_path / "empty", alone)
    assert planned_jobs(work, both) == {**fresh, **TABLES}
    for rule, wc in job_wildcards(work, both):
        assert wc.get("dataset", "mnist") == "mnist", (rule, wc)
    new_seed = write_config(tmp_path / "s.yaml", seeds=SEEDS + [7])
    fresh = planned_jobs(tmp_path / "empty7", write_config(tmp_path / "s7.yaml", seeds=[7]))
    expected = {
        k: v
        for k, v in fresh.items()
        if k not in ("prepare_data", "train_classifier", "fd_reference", "analysis", "geometry")
    }
    assert planned_jobs(work, new_seed) == {**expected, **TABLES}
    for rule, wc in job_wildcards(work, new_seed):
        assert wc.get("seed", "7") == "7", (rule, wc)


def test_bad_config_fails_naming_key(tmp_path):
    for change, key in (({"vae__spatial__epochz": 3}, "vae.spatial.epochz"), ({"codebook__K": "many"}, "codebook.K")):
        proc = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", **change), check=False)
        assert proc.returncode != 0
        assert f"config key '{key}'" in proc.stdout + proc.stderr


def test_missing_dataset_fails_cleanly(tmp_path):
    cfg = write_config(tmp_path / "m.yaml", datasets=["mnist"], data_dir=str(tmp_path / "nodata"))
    proc = run_snakemake(tmp_path, configfile=cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "dataset 'mnist': files not found; looked in" in out and str(tmp_path / "nodata") in out
    assert not list((tmp_path / "results").rglob("*.npz"))  # nothing half-written


def test_report_builds_with_table_and_figures(done):
    """snakemake --report: every figure file of the run embedded byte for byte (not just one of its
    name), each a non-blank PNG of the configured width; the table's rows and the answer inside."""
    import base64

    import pandas as pd
    from PIL import Image

    work, cfg = done
    run_snakemake(work, "--report", "report.html", configfile=cfg)
    html = (work / "report.html").read_text()
    embedded = [
        (name, base64.b64decode(data))
        for name, data in re.findall(r"data:[\w/+.-]+;charset=utf8;filename=([\w.-]+);base64,([A-Za-z0-9+/=]+)", html)
    ]
    payloads = {data for _, data in embedded}
    (table,) = [data.decode() for name, data in embedded if name == "metrics.html"]
    df = pd.read_csv(work / "results" / "tables" / "metrics.csv")
    assert table.count("<tr") - 1 == len(df)  # header row + one per result row
    for row in df.itertuples():
        assert f"<td>{row.quantizer}</td>" in table
    (answer,) = [data.decode() for name, data in embedded if name == "answer.html"]
    assert (work / "results" / "tables" / "contrasts.png").read_bytes() in payloads
    assert "riemannian/geodesic \u2212 graph/geodesic" in answer
    width = round(TEST_CONFIG["report"]["fig_width"] * TEST_CONFIG["report"]["dpi"])
    figures = sorted((work / "results").rglob("figures/*.png")) + sorted((work / "results").rglob("analysis/*.png"))
    figures += sorted((work / "results").glob("*/*/rate_distortion.png"))
    n_q = len(QS)
    # per run: 5 figures + a decoded codebook per quantizer; the analyses (4) and the geometry sheet
    # (1) of the first seed; the rate-distortion figure of each variant
    assert len(figures) == len(VARIANTS) * len(SEEDS) * (5 + n_q) + len(VARIANTS) * (4 + 1 + 1)
    for png in figures:
        assert png.read_bytes() in payloads, f"{png.relative_to(work)} is not in the report"
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] == width and im.size[1] > 50, png
            grey = np.asarray(im.convert("L"))
            # more than axes and labels: a real plot or image grid has many grey levels
            assert len(np.unique(grey)) > 20, f"{png} looks blank"


# ---------------------------------------------------------------- code inputs read from the imports
def loaded_modules(log):
    """The geovq modules a job's process had loaded when its stage returned (runner.entry's line)."""
    for line in log.read_text().splitlines():
        if "] geovq modules: " in line:
            return line.split("] geovq modules: ", 1)[1].split()
    return None


def module_file(module):
    path = ROOT.joinpath(*module.split("."))
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(ROOT).as_posix()


def test_every_job_loaded_only_its_code_inputs(done):
    """What each job of the complete run really imported (sys.modules after its stage) is among
    the code inputs geovq.codedeps computes for its rule: a missed import would be a stale result."""
    from geovq.codedeps import Source, code_inputs

    work, _ = done
    results = work / "results"
    logs = sorted(p for p in results.rglob("*.log") if "logs" in p.relative_to(results).parts)
    ran = set()
    for log in logs:
        rule = re.search(r"start-up [0-9.]+ s \(rule (\w+)", log.read_text()).group(1)  # the runner names it
        modules = loaded_modules(log)
        assert modules and "geovq.stages.runner" in modules, f"{log}: no 'geovq modules:' line"
        missing = {module_file(m) for m in modules} - set(code_inputs(rule, ROOT))
        assert not missing, f"{log.relative_to(work)}: rule {rule} loaded {sorted(missing)}, not among its code inputs"
        ran.add(rule)
    assert ran == set(Source(ROOT).registry())  # every stage ran in the test config


# Snakemake takes an input newer than an output for a change unless the input's checksum, recorded
# when the job ran, is unchanged: with no file eligible for checksums a newer mtime is an edit.
BY_MTIME = ("--max-checksum-file-size", "0")


@contextlib.contextmanager
def touched(rel):
    """ROOT/rel with its mtime set to now (contents unchanged), as an edit looks to Snakemake's mtime
    trigger (dry-run with BY_MTIME); the original mtime restored after."""
    path = ROOT / rel
    st = path.stat()
    os.utime(path)
    try:
        yield
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_touching_the_decoder_rewrite_reruns_the_riemannian_lengths_and_after(done):
    """geovq/jvp.py is imported by geovq.riemann: the Riemannian lengths, the geodesic codes (one
    stage for both geodesic quantizers, which computes metrics of new cells for `riemannian`), the
    analysis (it decodes along geodesics) and what follows; no VAE, k-means or VQ-VAE job."""
    work, cfg = done
    with touched("geovq/jvp.py"):
        jobs = planned_jobs(work, cfg, *BY_MTIME)
    pulled = [q for q in GEO if Q.get(q).metric]  # riemannian, fisher
    other = [q for q in QS if q not in GEO]
    plan = {
        "riemannian_lengths": R * len(METRICS),
        "test_metrics": R * TEST_METRICS,
        "geodesic_medoids": R * len(pulled),
        "geodesic_codes": R * len(GEO),
        **after_codes(GEO, analysis=len(VARIANTS)),
        **rate_distortion(R * len(QS)),  # its stage imports geovq.riemann: every quantizer's sweep
    }
    # the assign stage imports geovq.riemann (through geovq.assign): every quantizer's other codes,
    # and the other quantizers' metric and decode evaluations
    plan["assign_codes"] = R * n_assign(QS)
    plan["evaluate"] += R * n_evals(other, ("metric", "decode"))
    assert jobs == plan, jobs


def test_touching_the_evaluate_stage_reruns_evaluate_and_the_tables_only(done):
    work, cfg = done
    with touched("geovq/stages/evaluate.py"):
        jobs = planned_jobs(work, cfg, *BY_MTIME)
    assert jobs == {"evaluate": R * n_evals(QS), **TABLES}, jobs


def test_touching_the_geodesic_stages_reruns_no_vae_kmeans_or_vqvae(done):
    work, cfg = done
    with touched("geovq/stages/geodesic.py"):
        jobs = planned_jobs(work, cfg, *BY_MTIME)
    # the rate-distortion stage fits and links with library functions, not the geodesic stage's
    assert jobs == from_the_graph_on(), jobs


def test_every_train_cell_a_graph_node(tmp_path):
    """codebook.fit_cells: null on the test config (spatial variant: 1 200 images x 16 cells): every
    train cell is a node of the graph and of every pull-back metric, every post-hoc quantizer is
    fitted on all of them, every coded train cell is a node and keeps its Voronoi label, and the
    study's contrasts, the rate-distortion sweep and the report follow."""
    import pandas as pd

    from geovq.config import validate

    # the spatial variant (the vanilla one is fitted on all its 1 200 cells already), one seed
    # (the contrasts' intervals then over images only), one rate-distortion refit and one prior
    # epoch keep the run to about two minutes
    cfg = write_config(
        tmp_path / "config.yaml",
        variants=["spatial"],
        seeds=[0],
        codebook__fit_cells=None,
        rate_distortion__Ks=[8],
        prior__epochs=1,
    )
    run_snakemake(tmp_path, configfile=cfg)
    n_cells = TEST_CONFIG["dataset_options"]["n_train"] * TEST_CONFIG["vae"]["spatial"]["grid"] ** 2
    run = tmp_path / "results" / "synthetic" / "spatial" / "seed0"
    every = np.arange(n_cells)
    np.testing.assert_array_equal(np.load(run / "cells.npz")["ids"], every)
    np.testing.assert_array_equal(np.load(run / "graph" / "knn.npz")["nodes"], every)
    for m in METRICS:
        d = np.load(run / "graph" / f"lengths_{m}.npz")
        np.testing.assert_array_equal(d["nodes"], every)
        assert d["metrics"].shape == (n_cells, 3, 3) and np.isfinite(d["metrics"]).all()
    for q in POST:
        np.testing.assert_array_equal(np.load(run / q / "codebook.npz")["fit_cell_ids"], every, err_msg=q)
    for q in GEO:
        codes = np.load(run / q / "codes_train.npz")
        label = np.load(run / q / "voronoi.npz")["label"]
        cells = (codes["image_index"][:, None] * 16 + np.arange(16)[None]).ravel()
        np.testing.assert_array_equal(codes["codes"].ravel(), label[cells], err_msg=q)
        test = np.load(run / q / "codes_test.npz")["codes"]
        assert test.shape == (TEST_CONFIG["codebook"]["test_images"], 4, 4)
        assert 0 <= test.min() and test.max() < TEST_CONFIG["codebook"]["K"]
    tables = tmp_path / "results" / "tables"
    c = pd.read_csv(tables / "contrasts.csv")
    specs = validate(copy.deepcopy(TEST_CONFIG))["contrasts"]
    assert set(c.contrast) == {f"{s['a']} \u2212 {s['b']}" for s in specs} and set(c.variant) == {"spatial"}
    assert (c.n_seeds == 1).all() and np.isfinite(c[["diff_lo", "diff_hi"]]).all().all()
    rd = pd.read_csv(tables / "rate_distortion.csv")
    assert set(rd.K) == {8, TEST_CONFIG["codebook"]["K"]} and set(rd.quantizer) == set(QS)
    run_snakemake(tmp_path, "--report", "report.html", configfile=cfg)
    assert "rate_distortion.png" in (tmp_path / "report.html").read_text()


# ---------------------------------------------------------------- your own images; config/cifar10.yaml
def png_dataset(folder, layout, n=1500, seed=0):
    """The test config's synthetic shapes (16x16 grey, 4 classes) as real PNG files: a flat folder
    (no labels) or one folder per shape (an ImageFolder tree). Returns the images and their shapes."""
    from PIL import Image

    from geovq.data import synthetic

    images, shapes = synthetic(n, size=16, channels=1, classes=4, seed=seed)
    names = ["disc", "square", "cross", "ring"]
    for i, (img, shape) in enumerate(zip(images, shapes)):
        path = folder / (names[shape] if layout == "classes" else "") / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(path)
    return images, shapes


def png_config(path, folder, name="shapes", **changes):
    """config/test.yaml on the PNG folder ``folder`` declared as image dataset ``name`` (20 % held out)."""
    declared = {name: {"kind": "folder", "path": str(folder), "channels": 1, "test_fraction": 0.2}}
    return write_config(path, datasets=[name], image_datasets=declared, **changes)


@pytest.mark.parametrize("layout", ["flat", "classes"])
def test_own_png_folder_end_to_end(tmp_path, layout):
    """config/test.yaml on 1 500 real PNGs declared under image_datasets: every stage runs as on the
    synthetic set. A flat folder has no labels: the classifier learns rotations, the priors are
    unconditional and the class columns are empty; class folders give labels as for a built-in set."""
    import pandas as pd

    png_dataset(tmp_path / "pngs", layout)
    cfg = png_config(tmp_path / "config.yaml", tmp_path / "pngs")
    run_snakemake(tmp_path, configfile=cfg)
    res = tmp_path / "results"
    train, test = np.load(res / "shapes/data/train.npz"), np.load(res / "shapes/data/test.npz")
    assert train["images"].shape == (1200, 1, 16, 16) and test["images"].shape == (300, 1, 16, 16)
    labeled = layout == "classes"
    assert (train["labels"] >= 0).all() if labeled else (train["labels"] == -1).all()
    clf = json.loads((res / "shapes/classifier/metrics.json").read_text())
    assert clf["task"] == ("classes" if labeled else "rotation") and 0 <= clf["test_accuracy"] <= 1
    df = result_rows(tmp_path)
    expected = {(v, q, a, s) for v in VARIANTS for q, a in EVALS for s in SEEDS}
    assert set(zip(df.variant, df.quantizer, df["assign"], df.seed)) == expected and set(df.dataset) == {"shapes"}
    assert (df.classifier_task == clf["task"]).all()
    own = df[[a == Q.get(q).native_assign for q, a in zip(df.quantizer, df["assign"])]]
    for col in ("mse_quant_real", "test_bits_per_token", "fd_samples_test", "fd_quant_recon_test", "kid_samples_test"):
        assert np.isfinite(own[col]).all(), col
    for col in ("quant_recon_accuracy", "conditional_accuracy", "test_class_unigram_bits_per_token"):
        assert own[col].notna().all() if labeled else own[col].isna().all(), col
    nll = json.loads((res / "shapes/spatial/seed0/kmeans/prior/nll.json").read_text())
    assert nll["conditional"] is labeled
    recon = json.loads((res / "shapes/spatial/seed0/vae/recon_quality.json").read_text())
    assert (recon["cont_recon_accuracy"] is None) is not labeled
    contrasts = pd.read_csv(res / "tables/contrasts.csv")
    assert set(contrasts.dataset) == {"shapes"} and (res / "tables/answer.md").exists()
    assert (res / "shapes/spatial/seed0/analysis/geometry.png").exists()


def test_own_png_folder_is_prepared_by_snakemake_and_its_files_are_inputs(tmp_path):
    """prepare_data of an image folder through Snakemake (the only job run): the files it read are the
    job's inputs, so a new image or an edited one reruns it; a clashing name stops the plan by key."""
    from PIL import Image

    png_dataset(tmp_path / "pngs", "classes", n=60)
    cfg = png_config(tmp_path / "config.yaml", tmp_path / "pngs")
    target = "results/shapes/data/train.npz"
    run_snakemake(tmp_path, target, configfile=cfg)
    train = np.load(tmp_path / target)
    assert train["images"].shape == (48, 1, 16, 16) and set(train["labels"]) <= {0, 1, 2, 3}
    log = (tmp_path / "results/logs/shapes/prepare_data.log").read_text()
    assert "['cross', 'disc', 'ring', 'square']" in log
    assert planned_jobs(tmp_path, cfg, target) == {}
    first = sorted((tmp_path / "pngs" / "disc").iterdir())[0]
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(first)  # an edited image
    assert planned_jobs(tmp_path, cfg, target) == {"prepare_data": 1}
    run_snakemake(tmp_path, target, configfile=cfg)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "pngs" / "ring" / "new.png")  # a new one
    assert planned_jobs(tmp_path, cfg, target) == {"prepare_data": 1}
    clash = png_config(tmp_path / "clash.yaml", tmp_path / "pngs", name="mnist")
    proc = run_snakemake(tmp_path, "-n", configfile=clash, check=False)
    assert (
        proc.returncode != 0
        and "config key 'image_datasets.mnist': 'mnist' is a built-in dataset" in proc.stdout + proc.stderr
    )


def cifar10_shrunk(work):
    """config/cifar10.yaml at test size on CIFAR-10-format pickles written here (400 train and 160
    test images of noise): its 8x8 grid on 3x32x32 images, every quantizer, one seed, tiny models."""
    from test_data import write_cifar

    write_cifar(work / "data" / "cifar-10-batches-py", per_batch=80, n_test=160)
    cfg = yaml.safe_load((ROOT / "config" / "cifar10.yaml").read_text())
    spatial = cfg["vae"]["spatial"]
    cfg.update(
        seeds=[0],
        threads=1,
        download=False,
        data_dir=str(work / "data"),
        codebook={"K": 8, "kmeans_iters": 10, "fit_cells": 2000, "train_images": 200, "test_images": 100},
        graph={"k": 10},
        medoids={"max_iter": 5},
        prior={"n_layer": 1, "n_head": 2, "n_embd": 32, "epochs": 1, "batch_size": 64, "sample": {"n": 60}},
        classifier={"channels": [8, 16], "feature_dim": 32, "epochs": 1, "batch_size": 64},
        analysis={"inits": ["kmeans"]},
        rate_distortion={"Ks": [4], "test_images": 50},
        geometry={"n_pairs": 2000, "n_sources": 32, "n_test_cells": 40, "pool": 100, "n_edges": 20, "n_boot": 100},
        report={"fig_width": 8, "dpi": 60, "n_images": 6, "n_codes": 8},
    )
    cfg["vae"]["spatial"] = {**spatial, "channels": [8, 8], "latent_channels": 3, "epochs": 1, "batch_size": 64}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def test_cifar10_config_shrunk(tmp_path):
    """config/cifar10.yaml, shrunk, end to end on CIFAR-10's file format: colour 3x32x32 images through
    an 8x8 latent grid, pull-back metrics over all three channels, every quantizer and the study."""
    cfg_path, cfg = cifar10_shrunk(tmp_path)
    run_snakemake(tmp_path, configfile=cfg_path)
    res = tmp_path / "results"
    assert np.load(res / "cifar10/data/train.npz")["images"].shape == (400, 3, 32, 32)
    df = result_rows(tmp_path)
    qs = cfg["quantizers"]
    assert len(df) == n_evals(qs) and set(df.variant) == {"spatial"} and set(df.dataset) == {"cifar10"}
    assert np.isfinite(df.mse_quant_real).all() and (df.n_test_images == 100).all()
    run = res / "cifar10/spatial/seed0"
    for q in qs:
        assert np.load(run / q / "codes_test.npz")["codes"].shape == (100, 8, 8), q
        assert np.load(run / q / "prior/samples.npz")["images"].shape == (60, 3, 32, 32), q
    for m in Q.metrics(qs):
        assert np.load(run / "graph" / f"lengths_{m}.npz")["metrics"].shape == (2000, 3, 3), m
    assert json.loads((res / "cifar10/classifier/metrics.json").read_text())["task"] == "classes"
    assert (res / "tables/answer.md").exists() and (run / "analysis/geometry.png").exists()
