"""Stages of rules/geodesic.smk, the geodesic quantizers: kNN graph, Riemannian lengths, K-medoids, codes.

Quantizer ``graph`` uses the kNN graph's Euclidean edge lengths (Isomap-style geodesics);
``riemannian`` and ``fisher`` lengths from a decoder pull-back metric (geovq.riemann.pullback:
the mean image's JᵀJ, the Bernoulli likelihood's Fisher–Rao metric). All share the graph; only
the pull-back ones need the VAE decoder.
"""

from __future__ import annotations

import numpy as np

from geovq.artifacts import code_subset, load_cells, load_graph, load_latents, save_graph, write_csv
from geovq.io import GeovqError, load_npz, save_json, save_npz
from geovq.stages.runner import device_of


def knn_graph(inp, out, params, log):
    from geovq.graph import bridge_components, knn_graph as build

    g = params.graph
    nodes, x = load_cells(inp.cells)  # the train cells every post-hoc quantizer is fitted on
    if g["k"] >= len(nodes):
        raise GeovqError(
            f"config key 'graph.k': k={g['k']} must be smaller than the number of graph nodes "
            f"{len(nodes)} ({inp.cells}; config codebook.fit_cells)"
        )
    log(f"kNN graph over {len(nodes)} train cells (dim {x.shape[1]}), k={g['k']}, {g['symmetrize']}")
    G, info = build(
        x, g["k"], symmetrize=g["symmetrize"], method=g["knn_method"], exact_max=g["exact_max"], seed=params.seed
    )
    log(
        f"{info['n_edges']} undirected edges, {info['n_components']} connected components, "
        f"recall {info.get('recall', 1.0)}, {info['seconds']:.1f}s"
    )
    if info["n_components"] > 1:
        if not g["bridge"]:
            raise GeovqError(
                f"kNN graph has {info['n_components']} connected components and config key "
                f"'graph.bridge' is false: some cells would get no code; raise graph.k or enable bridging"
            )
        G, n_bridges = bridge_components(G, x)
        info["n_bridges"] = int(n_bridges)
        log(f"bridged components with {n_bridges} closest-pair edges")
    save_graph(out.graph, G, nodes=nodes.astype(np.int64), x=x)
    save_json(out.info, {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in info.items()})


def _metrics_process():
    """What the pull-back metrics want of the process: freed activation memory kept for reuse
    (geovq.device.keep_freed_memory). Only in the jobs that compute metrics, the others do not
    gain enough to pay for the higher peak RSS (benchmarks/README.md)."""
    from geovq.device import keep_freed_memory

    keep_freed_memory()


def riemannian_lengths(inp, out, params, log):
    """Edge lengths from the pull-back metric ``params.metric`` (the job's wildcard) at every node."""
    from geovq.riemann import cell_metrics, edge_lengths_from_metrics, pullback
    from geovq.train import load_vae

    _metrics_process()
    device = device_of(params)
    G, d = load_graph(inp.graph, ("nodes", "x"))
    mu, _ = load_latents(inp.latents_train)
    decode, weight = pullback(load_vae(inp.model, device), params.metric)
    log(
        f"{params.metric} pull-back metrics of {len(d['nodes'])} nodes "
        f"(decoder in eval mode, {params.precision}, device {device})"
    )
    metrics = cell_metrics(decode, mu, d["nodes"], weight=weight, device=device, precision=params.precision)
    L = edge_lengths_from_metrics(G, d["x"], metrics)
    ratio = L.data / np.maximum(G.data, 1e-30)
    log(
        f"{L.nnz // 2} edges; {params.metric}/Euclidean length ratio median {np.median(ratio):.3g} "
        f"(5%: {np.quantile(ratio, 0.05):.3g}, 95%: {np.quantile(ratio, 0.95):.3g})"
    )
    save_graph(out.lengths, L, nodes=d["nodes"], x=d["x"], metrics=metrics)


def geodesic_medoids(inp, out, params, log):
    from geovq.kmedoids import fit_medoids

    G, d = load_graph(inp.lengths, ("nodes", "x"))
    m = params.medoids
    K = params.K
    if K > G.shape[0]:
        raise GeovqError(
            f"config key 'codebook.K': K={K} is larger than the number of graph nodes {G.shape[0]} "
            f"(config codebook.fit_cells, or the number of train cells)"
        )
    log(f"geodesic K-medoids K={K} on {G.shape[0]} nodes, {G.nnz // 2} edges, init {m['init']}")
    km = fit_medoids(G, d["x"], K, m, params.seed, threads=params.threads)  # the same medoids on any number
    for i, obj in enumerate(km.objective_):
        log(f"step {i}: objective {obj:.6g}")
    save_npz(
        out.codebook,
        codebook=km.cluster_centers_.astype(np.float32),
        K=np.int64(K),
        medoids=km.medoids_,
        medoid_cells=d["nodes"][km.medoids_],
        fit_cell_ids=d["nodes"],
    )
    save_npz(out.voronoi, dist=km.dist_, label=km.labels_)
    write_csv(out.objective, [{"step": i, "objective": o} for i, o in enumerate(km.objective_)])


def geodesic_codes(inp, out, params, log):
    """Codes of train and test cells: a graph node keeps its Voronoi label; any other cell is
    linked to its k nearest nodes and takes the label of the shortest path through them."""
    from geovq.linking import link_new_cells
    from geovq.voronoi import assign_new
    from geovq.quantizers import get

    G, d = load_graph(inp.lengths, ("nodes", "x"))
    vor = load_npz(inp.voronoi, ("dist", "label"))
    K = int(load_npz(inp.codebook, ("K",))["K"])
    nodes, x_nodes = d["nodes"], d["x"]
    k = params.graph["k"]
    pull = device = metrics_nodes = None
    metric = get(params.quantizer).metric
    if metric is not None:  # links measured with the pull-back metric of the graph's edges
        from geovq.riemann import pullback
        from geovq.train import load_vae

        device = device_of(params)
        pull = pullback(load_vae(inp.model, device), metric)
        metrics_nodes = d["metrics"]
    for split, path in (("train", out.codes_train), ("test", out.codes_test)):
        mu, labels = load_latents(getattr(inp, f"latents_{split}"))
        img = code_subset(len(mu), params.codebook[f"{split}_images"], params.seed, split)
        n, c, h, w = mu[img].shape
        cell_ids = (img[:, None] * (h * w) + np.arange(h * w)[None]).ravel()  # cells of the chosen images
        codes = np.empty(len(cell_ids), np.int64)
        is_node = np.zeros(len(cell_ids), bool)
        if split == "train":  # graph nodes already have their geodesic label
            pos = np.searchsorted(nodes, cell_ids)
            is_node = (pos < len(nodes)) & (nodes[np.minimum(pos, len(nodes) - 1)] == cell_ids)
            codes[is_node] = vor["label"][pos[is_node]]
        new_ids = cell_ids[~is_node]
        metrics_new = None
        if len(new_ids):
            if pull is not None and params.graph["new_point_metric"] == "exact":
                if split == "test":  # computed once per run for every rule that needs them
                    metrics_new = load_npz(inp.metrics_test, ("metrics", "cell_ids"))
                    if not np.array_equal(metrics_new["cell_ids"], new_ids):
                        raise GeovqError(f"{inp.metrics_test}: metrics of other test cells than this run codes")
                    metrics_new = metrics_new["metrics"]
                    log(f"{split}: pull-back metrics of {len(new_ids)} new cells from {inp.metrics_test}")
                else:
                    _metrics_process()
                    log(f"{split}: pull-back metrics of {len(new_ids)} new cells")
            nbr, lengths = link_new_cells(
                new_ids,
                mu,
                x_nodes,
                k,
                seed=params.seed,
                new_point_metric=params.graph["new_point_metric"],
                metrics_nodes=metrics_nodes,
                pull=pull,
                device=device,
                precision=params.graph["metric_precision"],
                metrics_new=metrics_new,
                knn_method=params.graph["knn_method"],
                exact_max=params.graph["exact_max"],
            )
            codes[~is_node] = assign_new(nbr, lengths, vor["dist"], vor["label"])[0]
        save_npz(path, codes=codes.reshape(n, h, w), image_index=img, labels=labels[img], K=np.int64(K))
        log(f"{split}: {len(cell_ids)} cells of {n} images; {int(is_node.sum())} graph nodes, {len(new_ids)} linked")
