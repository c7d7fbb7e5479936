"""Benchmark of the kNN methods of geovq.graph on a trained VAE's cells: the graph of the nodes
(``knn``) and the new test cells' neighbours (``knn_query``), per method, in one process.

    .venv/bin/python benchmarks/bench_knn.py \\
        --latents results/fashionmnist/spatial/seed0/vae/latents_train.npz \\
        --latents-test results/fashionmnist/spatial/seed0/vae/latents_test.npz \\
        --methods kdtree,hnsw --k 20 --threads 2

Every train cell is a node (``--max-cells``: a seeded subsample, as in bench_fullscale.py). For
each method it prints wall seconds of the graph's search and the test cells' query, and the
fraction of each row's neighbours within its exact k-th distance, measured against the first
exact method given (exact or kdtree) on every row: what a method's approximation costs the graph.
The methods run in the order given, one after the other, so their seconds are comparable only
within one run. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def within_kth(x_base, queries, got, kth):
    """Fraction of the neighbours ``got`` no farther than each row's exact k-th distance."""
    d = np.linalg.norm(x_base[got] - queries[:, None], axis=2)
    return float(np.mean(d <= kth[:, None] * (1 + 1e-6) + 1e-30))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latents", required=True, help="train latents npz (key 'mu' (N, C, H, W))")
    p.add_argument("--latents-test", required=True, help="test latents npz")
    p.add_argument("--methods", default="kdtree,hnsw", help="comma-separated methods of geovq.graph.knn")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--max-cells", type=int, help="seeded subsample of train cells as nodes (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="faiss (and so KD-tree) threads")
    args = p.parse_args(argv)

    from geovq.artifacts import fit_cell_ids, load_latents
    from geovq.codebook import to_cells
    from geovq.graph import METHODS, knn, knn_query
    from geovq.stages.runner import _set_threads

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS[1:]]
    if bad:
        p.error(f"--methods: unknown {bad}; expected some of {list(METHODS[1:])}")
    _set_threads(args.threads)
    cells = to_cells(load_latents(args.latents)[0])
    x = np.ascontiguousarray(cells[fit_cell_ids(len(cells), args.max_cells, args.seed)])
    test = np.ascontiguousarray(to_cells(load_latents(args.latents_test)[0]))
    n_distinct = len(np.unique(x, axis=0))
    print(
        f"{len(x)} nodes ({n_distinct} distinct), {len(test)} test cells, dim {x.shape[1]}, k {args.k}, {args.threads} threads"
    )

    rows, ref = [], None
    for m in methods:
        t0 = time.perf_counter()
        idx, dist, info = knn(x, args.k, method=m, exact_max=0, seed=args.seed)
        t1 = time.perf_counter()
        q_idx, q_dist, _ = knn_query(x, test, args.k, method=m, exact_max=0, seed=args.seed)
        t2 = time.perf_counter()
        if ref is None and m in ("exact", "kdtree"):
            ref = (dist[:, -1].copy(), q_dist[:, -1].copy(), m)
        row = {"method": m, "graph_s": t1 - t0, "query_s": t2 - t1, "recall_reported": info["recall"]}
        if ref is not None:
            row["graph_within"] = within_kth(x, x, idx, ref[0])
            row["query_within"] = within_kth(x, test, q_idx, ref[1])
        rows.append(row)
        print(f"  {m}: graph {row['graph_s']:.1f} s, test query {row['query_s']:.1f} s", flush=True)

    print(f"\n| method | graph s | test query s | within exact k-th (graph, test){' vs ' + ref[2] if ref else ''} |")
    print("|---|---:|---:|---|")
    for r in rows:
        within = f"{r['graph_within']:.5f}, {r['query_within']:.5f}" if "graph_within" in r else "–"
        print(f"| {r['method']} | {r['graph_s']:.1f} | {r['query_s']:.1f} | {within} |")
    return rows


if __name__ == "__main__":
    main()
