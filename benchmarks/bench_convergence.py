"""Convergence of the study's geodesic contrasts with graph size: 15 000 fit cells to every train cell.

The default run fits every post-hoc quantizer on ``codebook.fit_cells`` = 15 000 train cells
(benchmarks/README.md; docs/performance.md, "Every train cell a graph node", says why). Does the answer change
with more? For each size N of the seeded fit-cell subsample (geovq.artifacts.fit_cell_ids, the
pipeline's; N = "all" is every cell) this refits, on the same N cells, with the library functions
of the pipeline's jobs:

    kmeans      k-means (geovq.codebook.fit_euclidean), codes by nearest centroid
    graph       geodesic K-medoids on the kNN graph with Euclidean edge lengths, geodesic codes
    riemannian  the same on the decoder's pull-back edge lengths (geovq.riemann), geodesic codes
                with each test cell's own metric (graph.new_point_metric "exact")

codes a seeded set of ``--test-images`` test images (geovq.artifacts.code_subset, drawn as the
pipeline draws its test images), decodes them and prints per size the quant-real MSE of each and the
study's contrasts riemannian/geodesic - graph/geodesic (edge lengths) and riemannian/geodesic -
kmeans/nearest (whole methods), paired per test image with 95 % intervals (geovq.stats.paired_contrast,
one seed: over images only). Only the graph size changes between rows: the VAE, K, k, the
K-medoids settings (``--max-iter`` alternations, no swaps: the full-scale setting of
bench_fullscale.py at every size) and the test images are the same. It prints figures and asserts
nothing.

    .venv/bin/python benchmarks/bench_convergence.py \\
        --model results/fashionmnist/spatial/seed0/vae/model.pt \\
        --latents results/fashionmnist/spatial/seed0/vae/latents_train.npz \\
        --latents-test results/fashionmnist/spatial/seed0/vae/latents_test.npz \\
        --test results/fashionmnist/data/test.npz --sizes 15000,60000,240000,all
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--latents", required=True)
    p.add_argument("--latents-test", required=True)
    p.add_argument("--test", required=True, help="the prepared test split (prepare_data's test.npz)")
    p.add_argument("--sizes", default="15000,60000,240000,all", help="fit-cell counts; 'all' = every train cell")
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--K", type=int, default=512)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--max-iter", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()

    import torch

    from geovq.artifacts import code_subset, fit_cell_ids, load_latents
    from geovq.codebook import fit_euclidean, quantize, to_cells
    from geovq.config import validate
    from geovq.data import load_prepared
    from geovq.device import keep_freed_memory
    from geovq.kmedoids import fit_medoids
    from geovq.linking import link_new_cells
    from geovq.voronoi import assign_new
    from geovq.graph import bridge_components, knn_graph
    from geovq.riemann import cell_metrics, edge_lengths_from_metrics, pullback
    from geovq.stats import paired_contrast
    from geovq.train import decode, load_vae

    torch.set_num_threads(args.threads)
    keep_freed_memory()
    device = torch.device("cpu")
    vae = load_vae(args.model, device)
    pull = pullback(vae, "riemannian")
    mu, _ = load_latents(args.latents)
    mu_test, _ = load_latents(args.latents_test)
    images, _ = load_prepared(args.test)
    cells = to_cells(mu)
    n_cells, (h, w) = len(cells), mu.shape[2:]
    img = code_subset(len(mu_test), args.test_images, args.seed, "test")
    test_ids = (img[:, None] * (h * w) + np.arange(h * w)[None]).ravel()
    real = torch.as_tensor(images[img])
    codebook_cfg = validate({})["codebook"]
    medoids = {"init": "kmeans", "max_iter": args.max_iter, "swap": False}

    def mse(codebook, codes):
        quant = decode(vae, quantize(codebook, codes.reshape(len(img), h, w)), device)
        return ((quant - real) ** 2).flatten(1).mean(1).double().numpy()

    rows = []
    for size in args.sizes.split(","):
        N = None if size.strip() == "all" else int(size)
        t0 = time.perf_counter()
        ids = fit_cell_ids(n_cells, N, args.seed)
        x = np.ascontiguousarray(cells[ids])
        G, info = knn_graph(x, args.k, seed=args.seed)
        if info["n_components"] > 1:
            G, _ = bridge_components(G, x)
        metrics = cell_metrics(pull[0], mu, ids, weight=pull[1], device=device)
        L = edge_lengths_from_metrics(G, x, metrics)
        err = {}
        km = fit_euclidean("kmeans", x, args.K, codebook_cfg, args.seed)
        err["kmeans/nearest"] = mse(km.cluster_centers_, km.predict(to_cells(mu_test)[test_ids]))
        for name, lengths, with_metric in (("graph", G, False), ("riemannian", L, True)):
            fit = fit_medoids(lengths, x, args.K, medoids, args.seed)
            nbr, link = link_new_cells(
                test_ids,
                mu_test,
                x,
                args.k,
                seed=args.seed,
                new_point_metric="exact",
                metrics_nodes=metrics if with_metric else None,
                pull=pull if with_metric else None,
                device=device,
            )
            codes, _ = assign_new(nbr, link, fit.dist_, fit.labels_)
            err[f"{name}/geodesic"] = mse(fit.cluster_centers_, codes)
        row = {"fit_cells": len(ids), "seconds": time.perf_counter() - t0, "knn": info["method"]}
        row.update({f"mse {q}": float(v.mean()) for q, v in err.items()})
        for a, b in (("riemannian/geodesic", "graph/geodesic"), ("riemannian/geodesic", "kmeans/nearest")):
            c = paired_contrast((err[a] - err[b])[None])
            row[f"{a} - {b}"] = {k: float(c[k]) for k in ("mean", "lo", "hi")}
            row[f"{a} - {b}"]["relative"] = float(c["mean"] / err[b].mean())
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(
        f"\nK = {args.K}, k = {args.k}, {args.max_iter} K-medoids alternations, no swaps; {len(img)} test images, seed {args.seed}"
    )
    head = "| fit cells | kmeans/nearest | graph/geodesic | riemannian/geodesic | riem − graph [95 % CI] | riem − kmeans [95 % CI] | s |"
    print(head + "\n" + "|---" * 7 + "|")
    for r in rows:
        cg, ck = r["riemannian/geodesic - graph/geodesic"], r["riemannian/geodesic - kmeans/nearest"]
        print(
            f"| {r['fit_cells']:,} | {r['mse kmeans/nearest']:.5f} | {r['mse graph/geodesic']:.5f} | "
            f"{r['mse riemannian/geodesic']:.5f} | {cg['mean']:+.5f} [{cg['lo']:+.5f}, {cg['hi']:+.5f}] "
            f"({100 * cg['relative']:+.1f} %) | {ck['mean']:+.5f} [{ck['lo']:+.5f}, {ck['hi']:+.5f}] "
            f"({100 * ck['relative']:+.1f} %) | {r['seconds']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
