"""Stages of rules/ratedistortion.smk: each quantizer's codebooks across K, and the table and figures.

``rate_distortion`` (one job per run and quantizer) fits the quantizer at every K of config
``rate_distortion.Ks`` on the run's shared fit cells, exactly as its codebook rule fits it at the
main K (geovq.codebook.fit_euclidean, geovq.kmedoids.fit_medoids), and scores the
first ``rate_distortion.test_images`` of the run's coded test images under each of its assignment
rules. At the main K nothing is refitted: the run's own codebook and test codes are read, so
that point is the main table's (rule ``evaluate``) on the first images. The VQ-VAE contributes
its main-K point only. Rate and distortion: geovq.ratedistortion.
"""

from __future__ import annotations

import numpy as np

from geovq.artifacts import load_cells, load_codes, load_latents
from geovq.io import GeovqError, load_npz, save_npz
from geovq.stages.runner import device_of

META = ("dataset", "variant", "quantizer", "seed")


def _single_thread():
    """The sweep's jobs compute with one thread (rules/ratedistortion.smk: ``threads: 1``, so two
    run side by side): K-medoids and Dijkstra are single-threaded; torch and faiss follow."""
    import torch

    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


def _fit_codes_vqvae(inp, cell_ids, device, grid):
    """The VQ-VAE's own codes of the run's fit cells (its encoder and nearest code)."""
    from geovq.data import load_prepared
    from geovq.vqvae import encode_codes, load_vqvae

    images, _ = load_prepared(inp.train)
    hw = grid[0] * grid[1]
    img, cell = np.divmod(cell_ids, hw)
    uniq, inv = np.unique(img, return_inverse=True)
    _, codes = encode_codes(load_vqvae(inp.model, device), images[uniq], device)
    return codes.reshape(len(uniq), hw)[inv, cell]


def _metrics(inp, params, q, idx, grid, fit_ids, device, log):
    """(test cells' metrics, fit cells' metrics) of the metric rule: the first images' rows of rule
    test_metrics' file; the fit cells' from a pull-back graph's lengths file where the run has one
    of that kind (its nodes are the fit cells: the quantizer's own, riemannian and fisher, or
    rules/common.smk fit_metrics_of's for the others), else computed here from the VAE's decoder
    (the call rule riemannian_lengths makes: the same numbers)."""
    from geovq.artifacts import grid_cell_ids
    from geovq.riemann import cell_metrics, pullback
    from geovq.vqvae import load_decoder

    cells = grid_cell_ids(idx, grid)
    test = load_npz(inp.metrics_test, ("metrics", "cell_ids"))
    if not np.array_equal(test["cell_ids"][: len(cells)], cells):
        raise GeovqError(f"{inp.metrics_test}: metrics of other test cells than the sweep's first images")
    shared = inp.lengths if q.metric is not None else getattr(inp, "metrics_fit", None)
    if shared:
        d = load_npz(shared, ("metrics", "nodes"))
        if not np.array_equal(d["nodes"], fit_ids):
            raise GeovqError(f"{shared}: graph nodes are not the run's fit cells {inp.cells}")
        log(f"{params.assign_metric} pull-back metrics of the {len(fit_ids)} fit cells from {shared}")
        return test["metrics"][: len(cells)], d["metrics"]
    mu_train, _ = load_latents(inp.latents_train)
    decode, weight = pullback(load_decoder(inp.model, device, dataset=params.dataset), params.assign_metric)
    log(f"{params.assign_metric} pull-back metrics of the {len(fit_ids)} fit cells")
    fit = cell_metrics(decode, mu_train, fit_ids, weight=weight, device=device, precision=params.metric_precision)
    return test["metrics"][: len(cells)], fit


def rate_distortion(inp, out, params, log):
    """One quantizer of one run at every K: per-image rate and distortions under each assignment."""
    from geovq.assign import metric_codes
    from geovq.codebook import euclidean_distances, nearest_centroid, quantize, to_cells
    from geovq.data import load_prepared
    from geovq.metrics import mse
    from geovq.quantizers import get
    from geovq.ratedistortion import unigram_rate_bits
    from geovq.train import decode
    from geovq.vqvae import load_decoder

    _single_thread()
    q = get(params.quantizer)
    assigns = q.swept_assigns
    rd, main_K = params.rate_distortion, int(params.codebook["K"])
    device = device_of(params)

    # the test images: the first n of the run's coded test images (the same for every quantizer and seed)
    main_codes = [load_codes(p) for p in inp.codes_test]
    n = min(rd["test_images"], len(main_codes[0]["image_index"]))
    idx = main_codes[0]["image_index"][:n]
    for a, codes, path in zip(assigns, main_codes, inp.codes_test):
        if not np.array_equal(codes["image_index"][:n], idx):
            raise GeovqError(f"{path}: {q.name}/{a} codes other test images than {inp.codes_test[0]}; must be paired")
    images, _ = load_prepared(inp.test)
    mu, _ = load_latents(inp.latents_test)  # the VAE's mu, or the VQ-VAE's z_e
    _, _, h, w = mu.shape
    real = images[idx]
    model = load_decoder(inp.model, device, dataset=params.dataset)
    cont = decode(model, mu[idx], device) if q.posthoc else None
    x_test = to_cells(mu[idx])
    if q.posthoc:
        ids, x = load_cells(inp.cells)
    else:  # the VAE's fit cells by id (artifacts.fit_cell_ids, as rule train_cells draws them)
        from geovq.artifacts import fit_cell_ids

        n_train = len(load_npz(inp.train, ("labels",))["labels"])
        ids, x = fit_cell_ids(n_train * h * w, params.codebook["fit_cells"], params.seed), None
    main_cb = load_npz(inp.codebook, ("codebook",))["codebook"]

    Ks = sorted(set(rd["Ks"]) | {main_K}) if q.posthoc else [main_K]
    skipped = [k for k in Ks if k > len(ids)]
    if skipped:
        log(f"K={skipped} skipped: more codes than the {len(ids)} fit cells (config codebook.fit_cells)")
    Ks = [k for k in Ks if k <= len(ids)]

    # what every K shares: the cells' metrics, the graph and the test cells' links to it; kmedoids'
    # distance matrix
    G = D = links = metrics_test = None
    if "metric" in assigns:  # the test cells' metrics (rule test_metrics) and the fit cells' own
        metrics_test, metrics_fit = _metrics(inp, params, q, idx, (h, w), ids, device, log)

    if q.geodesic:
        from geovq.artifacts import load_graph
        from geovq.linking import link_new_cells

        G, g = load_graph(inp.lengths, ("nodes", "x"))
        if not np.array_equal(g["nodes"], ids):
            raise GeovqError(f"{inp.lengths}: graph nodes are not the run's fit cells {inp.cells}")
        pull = None
        if q.metric is not None:
            from geovq.riemann import pullback
            from geovq.train import load_vae

            pull = pullback(load_vae(inp.vae, device), q.metric)
        cell_ids = (idx[:, None] * (h * w) + np.arange(h * w)[None]).ravel()
        metrics_nodes = None
        if pull is not None:
            from geovq.device import keep_freed_memory

            keep_freed_memory()  # as in rule geodesic_codes (geovq.stages.geodesic)
            metrics_nodes = load_npz(inp.lengths, ("metrics",))["metrics"]
        links = link_new_cells(
            cell_ids,
            mu,
            g["x"],
            params.graph["k"],
            seed=params.seed,
            new_point_metric=params.graph["new_point_metric"],
            metrics_nodes=metrics_nodes,
            pull=pull,
            device=device,
            precision=params.graph["metric_precision"],
            metrics_new=metrics_test,  # the test cells' own (rule test_metrics), for "exact" links
            knn_method=params.graph["knn_method"],
            exact_max=params.graph["exact_max"],
        )
    if q.name == "kmedoids" and any(k != main_K for k in Ks):
        D = euclidean_distances(x)

    values = {v: np.full((len(assigns), len(Ks), n), np.nan) for v in ("rate_bits", "mse_quant_real", "mse_quant_cont")}
    codes_used = np.zeros((len(assigns), len(Ks)), np.int64)
    for i_k, K in enumerate(Ks):
        fit_labels, test_codes = {}, {}
        if K == main_K:
            cb = main_cb
            for a, codes in zip(assigns, main_codes):
                test_codes[a] = codes["codes"][:n].reshape(n, -1)
            if q.posthoc:
                fit_labels["nearest"] = nearest_centroid(x, cb)[0]
                fit_labels["metric"] = metric_codes(x, metrics_fit, cb)[0][:, 0]
                if q.geodesic:
                    fit_labels["geodesic"] = load_npz(inp.voronoi, ("label",))["label"]
            else:
                fit_labels["nearest"] = _fit_codes_vqvae(inp, ids, device, (h, w))
        else:
            if q.geodesic:
                from geovq.kmedoids import fit_medoids
                from geovq.voronoi import assign_new

                est = fit_medoids(G, x, K, params.medoids, params.seed)
                log(f"K={K}: geodesic K-medoids objective {est.objective_[0]:.6g} -> {est.objective_[-1]:.6g}")
                fit_labels["geodesic"] = est.labels_
                test_codes["geodesic"] = assign_new(*links, est.dist_, est.labels_)[0].reshape(n, -1)
            else:
                from geovq.codebook import fit_euclidean

                est = fit_euclidean(q.name, x, K, params.codebook, params.seed, D=D)
            cb = est.cluster_centers_.astype(np.float32)
            fit_labels["nearest"] = nearest_centroid(x, cb)[0]
            test_codes["nearest"] = nearest_centroid(x_test, cb)[0].reshape(n, -1)
            fit_labels["metric"] = metric_codes(x, metrics_fit, cb)[0][:, 0]
            test_codes["metric"] = metric_codes(x_test, metrics_test, cb)[0][:, 0].reshape(n, -1)
        for i_a, a in enumerate(assigns):
            c = test_codes[a]
            values["rate_bits"][i_a, i_k] = unigram_rate_bits(fit_labels[a], c, K)
            codes_used[i_a, i_k] = len(np.unique(c))
            quant = decode(model, quantize(cb, c.reshape(n, h, w)), device)
            values["mse_quant_real"][i_a, i_k] = mse(quant, real).double().numpy()
            if q.posthoc:  # the VQ-VAE has no continuous decode of the VAE's (as in rule evaluate)
                values["mse_quant_cont"][i_a, i_k] = mse(quant, cont).double().numpy()
            log(
                f"K={K} {a}: rate {values['rate_bits'][i_a, i_k].mean():.4g} bits/image, "
                f"quant-real MSE {values['mse_quant_real'][i_a, i_k].mean():.5g}, {codes_used[i_a, i_k]} test codes used"
            )
    save_npz(
        out.sweep,
        K=np.asarray(Ks, np.int64),
        assign=np.asarray(assigns),
        image_index=idx,
        cells=np.int64(h * w),
        main_K=np.int64(main_K),
        codes_used=codes_used,
        **values,
        **{k: np.asarray(params.seed if k == "seed" else getattr(params, k)) for k in META},
    )


def load_sweep(path):
    """The per-(quantizer, assign) sweeps of one rate_distortion.npz, as geovq.ratedistortion reads them."""
    keys = (
        "K",
        "assign",
        "image_index",
        "cells",
        "main_K",
        "codes_used",
        "rate_bits",
        "mse_quant_real",
        "mse_quant_cont",
    )
    d = load_npz(path, keys + META)
    out = []
    for i_a, a in enumerate(d["assign"]):
        s = {k: str(d[k]) for k in META[:3]}
        s.update(
            seed=int(d["seed"]),
            assign=str(a),
            K=[int(k) for k in d["K"]],
            cells=int(d["cells"]),
            main_K=int(d["main_K"]),
            image_index=d["image_index"],
            codes_used=d["codes_used"][i_a],
        )
        for v in ("rate_bits", "mse_quant_real", "mse_quant_cont"):
            s[v] = d[v][i_a]
        out.append(s)
    return out


def rate_distortion_table(inp, out, params, log):
    """tables/rate_distortion.{csv,md}: every quantizer/assign at every K, means with intervals over
    seeds and images; tables/rate_distortion_contrasts.{csv,md}: the study's contrasts at every K."""
    from geovq import ratedistortion as rdl
    from geovq.io import atomic_path, save_text

    sweeps = [s for p in inp.sweeps for s in load_sweep(p)]
    table = rdl.summary(sweeps, alpha=params.alpha)
    with atomic_path(out.csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    save_text(out.md, rdl.summary_markdown(table) + "\n")
    con = rdl.contrasts_at_k(sweeps, [dict(s) for s in params.contrasts], alpha=params.alpha)
    with atomic_path(out.contrasts_csv) as tmp:
        con.to_csv(tmp, index=False, float_format="%.6g")
    save_text(out.contrasts_md, rdl.contrasts_markdown(con) + "\n")
    log(f"{len(table)} rate-distortion rows from {len(inp.sweeps)} sweeps; {len(con)} contrast rows")


def rate_distortion_figure(inp, out, params, log):
    """One dataset x variant's curves: distortion against rate per quantizer/assign, 95 % bands."""
    from geovq import plots
    from geovq import ratedistortion as rdl

    df = rdl.summary([s for p in inp.sweeps for s in load_sweep(p)], alpha=params.alpha)
    r = params.report
    plots.rate_distortion(
        out.figure, df, (r["fig_width"], r["fig_width"] * 0.55, r["dpi"]), f"{params.dataset} {params.variant}"
    )
    log(f"{len(df)} points")
