"""Stages of rules/report.smk: figures per trained VAE and the original study's analyses (codebooks, K-medoids, paths)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse.csgraph as csgraph

from geovq import plots, quantizers
from geovq.artifacts import load_codes, load_graph, load_latents, write_csv
from geovq.io import GeovqError, load_npz
from geovq.stages.runner import device_of


def _size(params, aspect=0.5):
    r = params.report
    return r["fig_width"], r["fig_width"] * aspect, r["dpi"]


def _by_quantizer(paths, quantizers):
    """Snakemake lists input files in quantizer order; pair them back up."""
    return dict(zip(quantizers, paths))


def _quantized_decode(decoder, codebook, codes, device):
    from geovq.codebook import quantize
    from geovq.train import decode

    return decode(decoder, quantize(codebook, codes), device).numpy()


def run_figures(inp, out, params, log):
    """Loss curves, paired reconstructions, code usage, decoded codebooks, K-medoids objectives."""
    from geovq.train import decode, load_vae
    from geovq.data import load_prepared
    from geovq.vqvae import load_decoder

    device = device_of(params)
    qs = list(params.quantizers)
    n = params.report["n_images"]
    vae = load_vae(inp.model, device, dataset=params.dataset)

    # loss curves: the VAE, the priors and the VQ-VAE, each on its own axes scale
    losses = pd.read_csv(inp.vae_losses)
    series = {f"VAE {s}": (losses.epoch, losses[f"{s}_neg_elbo"]) for s in ("train", "val")}
    plots.curves(
        out.vae_losses,
        series,
        _size(params),
        xlabel="epoch",
        ylabel="-ELBO (nats / image)",
        title=f"{params.dataset} {params.variant} VAE",
    )
    series = {}
    for q, path in _by_quantizer(inp.prior_losses, qs).items():
        df = pd.read_csv(path)
        series[f"{q} val"] = (df.epoch, df.val_bits_per_token)
    plots.curves(
        out.prior_losses,
        series,
        _size(params),
        xlabel="epoch",
        ylabel="validation NLL (bits / token)",
        title="Transformer priors over codes",
    )

    # paired reconstructions of the same test images
    images, _ = load_prepared(inp.test)
    codes = {q: load_codes(p) for q, p in _by_quantizer(inp.codes_test, qs).items()}
    idx = next(iter(codes.values()))["image_index"][:n]
    mu, _ = load_latents(inp.latents_test)
    rows = [("real", images[idx].numpy()), ("VAE (continuous)", decode(vae, mu[idx], device).numpy())]
    decoders = {q: load_decoder(p, device, dataset=params.dataset) for q, p in _by_quantizer(inp.decoders, qs).items()}
    codebooks = {q: load_npz(p, ("codebook",))["codebook"] for q, p in _by_quantizer(inp.codebooks, qs).items()}
    for q in qs:
        if not np.array_equal(codes[q]["image_index"][:n], idx):
            raise GeovqError(f"{q}: test codes are for other images than {qs[0]}'s; evaluation must be paired")
        rows.append((q, _quantized_decode(decoders[q], codebooks[q], codes[q]["codes"][:n], device)))
    plots.rows_figure(out.reconstructions, rows, _size(params, 0.12 * len(rows)))

    # code usage on the training codes
    counts = {}
    for q, p in _by_quantizer(inp.codes_train, qs).items():
        c = load_codes(p)
        counts[q] = np.bincount(c["codes"].ravel(), minlength=int(c["K"]))
    plots.usage_histograms(out.usage, counts, _size(params, 0.25 * len(qs)))

    # decoded codebooks: every cell of the grid set to one code, most used codes first
    for q, path in zip(qs, out.codebooks):
        order = np.argsort(-counts[q], kind="stable")[: params.report["n_codes"]]
        C, H, W = decoders[q].latent_shape
        z = np.repeat(np.repeat(codebooks[q][order][:, :, None, None], H, 2), W, 3)
        imgs = decode(decoders[q], z, device).numpy()
        ncol = int(np.ceil(np.sqrt(len(imgs))))
        width, _, dpi = _size(params)
        fig, axes = plots.figure(width, width, dpi)
        plots.show(axes[0, 0], plots.image_grid(imgs, ncol), f"{q}: decoded codes (most used first)")
        fig.tight_layout()
        plots.save(fig, path)

    # K-medoids objective per step
    series = {}
    for q, path in zip(quantizers.geodesic(qs), inp.objectives):
        df = pd.read_csv(path)
        series[q] = (df.step, df.objective / df.objective.iloc[0])
    plots.curves(
        out.objective,
        series,
        _size(params),
        xlabel="step (alternation or swap round)",
        ylabel="objective / initial objective",
        title="Geodesic K-medoids",
    )
    log(f"figures for {qs}")


def _path(pred, target):
    path = [target]
    while pred[path[-1]] >= 0:
        path.append(pred[path[-1]])
    return np.array(path[::-1])


def _resample(points, n):
    """n points equally spaced by arc length along a polyline."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], n)
    return np.stack([np.interp(t, s, points[:, c]) for c in range(points.shape[1])], 1)


def _member_errors(G, code_nodes, labels):
    """Geodesic distance of every node to the node of its own code (not the nearest code).

    One single-source Dijkstra per code, keeping only its members' entries: O(N) memory,
    never a K x N matrix.
    """
    err = np.full(len(labels), np.inf)
    for c, node in enumerate(code_nodes):
        members = np.flatnonzero(labels == c)
        if len(members):
            err[members] = csgraph.dijkstra(G, directed=True, indices=int(node))[members]
    return err


def analysis(inp, out, params, log):
    """The original study's analyses on one VAE's latents, as tables and figures."""
    from geovq.codebook import nearest_centroid
    from geovq.metrics import codebook_stats
    from geovq.kmedoids import fit_medoids
    from geovq.train import decode, load_vae

    device = device_of(params)
    Gg, d = load_graph(inp.graph, ("nodes", "x"))
    Gr, dr = load_graph(inp.riemannian, ("nodes", "x", "metrics"))
    x, nodes = d["x"], d["nodes"]
    K = params.K

    # 1. codebook comparison: every quantizer's codes of the graph nodes, errors in three metrics
    rows = []
    for q, path in _by_quantizer(inp.codebooks, params.quantizers).items():
        cb = load_npz(path, ("codebook",))["codebook"]
        labels, euc = nearest_centroid(x, cb)
        if q in params.geodesic:  # the geodesic quantizers' own assignment of their nodes
            labels = load_npz(inp.voronoi[params.geodesic.index(q)], ("label",))["label"]
            euc = np.linalg.norm(x - cb[labels], axis=1)
        code_nodes = nearest_centroid(cb, x)[0]  # centres snapped to their nearest node
        stats = codebook_stats(labels, K)
        rows.append(
            {
                "quantizer": q,
                "codes_used": stats["codes_used"],
                "perplexity": stats["perplexity"],
                "euclidean_error": float(euc.mean()),
                "graph_geodesic_error": float(_member_errors(Gg, code_nodes, labels).mean()),
                "riemannian_geodesic_error": float(_member_errors(Gr, code_nodes, labels).mean()),
            }
        )
    comp = pd.DataFrame(rows)
    write_csv(out.comparison, comp.to_dict("records"))
    plots.bars(
        out.comparison_png,
        comp.set_index("quantizer"),
        ["perplexity", "euclidean_error", "graph_geodesic_error", "riemannian_geodesic_error"],
        _size(params, 0.35),
        "Codebooks on the same latents (graph nodes)",
    )
    log(comp.to_string())

    # 2. K-medoids inits on the Riemannian graph at the main K (objective and usage against K:
    # rule rate_distortion, every quantizer)
    rows = []
    for init in params.analysis["inits"]:
        if init == params.medoids["init"]:  # the riemannian codebook itself: the same fit, not redone
            objective = pd.read_csv(inp.riemannian_objective).objective.to_numpy()
            labels = load_npz(inp.voronoi[params.geodesic.index("riemannian")], ("label",))["label"]
        else:
            km = fit_medoids(Gr, x, K, {**params.medoids, "init": init}, params.seed)
            objective, labels = np.asarray(km.objective_), km.labels_
        rows.append(
            {
                "K": K,
                "init": init,
                "initial_objective": float(objective[0]),
                "objective": float(objective[-1]),
                "perplexity": codebook_stats(labels, K)["perplexity"],
                "steps": len(objective),
            }
        )
        log(f"K={K} init={init}: objective {objective[0]:.5g} -> {objective[-1]:.5g}")
    inits = pd.DataFrame(rows)
    write_csv(out.inits, inits.to_dict("records"))
    plots.bars(
        out.inits_png,
        inits.set_index("init"),
        ["initial_objective", "objective", "perplexity"],
        _size(params, 0.35),
        f"Geodesic K-medoids (riemannian graph, K={K}) by init",
    )

    # 3. a geodesic path vs the straight line: PCA map and decoded interpolation strips
    rng = np.random.default_rng(params.seed)
    cb_r = load_npz(inp.codebooks[params.quantizers.index(params.geodesic[-1])], ("medoids",))["medoids"]
    dist, pred = csgraph.dijkstra(Gr, directed=True, indices=int(rng.integers(len(x))), return_predecessors=True)
    finite = np.flatnonzero(np.isfinite(dist))
    b = int(finite[np.argmax(dist[finite])])  # the farthest node: a long, telling path
    path = _path(pred, b)
    a = path[0]
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred[rng.choice(len(x), min(len(x), 5000), replace=False)], full_matrices=False)
    P = vt[:2].T
    line = np.linspace(0, 1, 20)[:, None] * (x[b] - x[a]) + x[a]
    plots.latent_map(
        out.latent_map,
        centred @ P,
        centred[cb_r] @ P,
        centred[path] @ P,
        (line - x.mean(0)) @ P,
        _size(params, 0.75),
        f"{params.dataset} {params.variant}: latent cells (PCA)",
    )
    vae = load_vae(inp.model, device, dataset=params.dataset)
    mu, _ = load_latents(inp.latents_train)
    n_steps = params.report["n_images"]
    geo = _resample(x[path], n_steps)
    straight = np.linspace(0, 1, n_steps)[:, None] * (x[b] - x[a]) + x[a]
    C, H, W = mu.shape[1:]
    img, cell = divmod(int(nodes[a]), H * W)  # the first cell's image is the context held fixed
    h, w = divmod(cell, W)
    strips = []
    for name, pts in (("straight line", straight), ("geodesic", geo)):
        z = np.repeat(mu[img][None], n_steps, 0)
        z[:, :, h, w] = pts
        strips.append((name, decode(vae, z, device).numpy()))
    plots.rows_figure(out.interpolation, strips, _size(params, 0.3))
    log(f"path of {len(path)} nodes from node {a} to {b}; geodesic length {dist[b]:.4g}")
