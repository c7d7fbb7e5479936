"""Benchmark of geodesic codebooks at full scale: every train cell of a trained VAE a graph node.

For each quantizer (``riemannian`` and ``fisher``, the decoder pull-back metrics of
geovq.riemann.pullback, and optionally ``graph``, Euclidean edge lengths, no metric) it runs the
library calls of the pipeline's geodesic jobs (geovq/stages/geodesic.py) one after the other:

    load          VAE (geovq.train.load_vae, not for graph), train latents, their cells
    knn_graph     kNN graph of the cells (geovq.graph.knn_graph), bridged if disconnected
    metrics       pull-back metric of every node (geovq.riemann.cell_metrics; not for graph)
    edge_lengths  Riemannian edge lengths (geovq.riemann.edge_lengths_from_metrics; not for graph)
    k-medoids     geodesic K-medoids (geovq.kmedoids.fit_medoids)
    test_codes    codes of the test cells (geovq.linking.link_new_cells + geovq.voronoi.assign_new)

and prints wall seconds, CPU seconds and peak RSS (MB) per stage, the total, and a summary table
against the issue's targets. Each quantizer runs in a fresh subprocess so that its peak RSS is
its own (peak RSS is reset per stage through /proc/self/clear_refs, as in bench_geodesic.py).
Unlike the pipeline, where each of these is its own job, one process runs them all, so a
stage's peak includes what the earlier ones left (the nodes' metrics; the malloc settings of
geovq.device.keep_freed_memory once the metrics ran); the load stage includes importing torch.

    .venv/bin/python benchmarks/bench_fullscale.py \\
        --model results/fashionmnist/spatial/seed0/vae/model.pt \\
        --latents results/fashionmnist/spatial/seed0/vae/latents_train.npz \\
        --latents-test results/fashionmnist/spatial/seed0/vae/latents_test.npz \\
        --quantizers riemannian,fisher --k 20 --K 512 --max-iter 5 --device auto --seed 0 --threads 2

``--max-cells`` / ``--max-test-cells`` take seeded subsamples (for a quick run); ``--json PATH``
also writes the figures as JSON. It prints figures and never asserts anything about them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_geodesic import Stage  # noqa: E402

METRIC_QUANTIZERS = ("riemannian", "fisher")  # pull-back metric kinds of geovq.riemann.pullback
QUANTIZERS = METRIC_QUANTIZERS + ("graph",)
TARGET_S, TARGET_MB = 360, 4096  # the targets, per quantizer on the 2-core machine


def run_one(args, quantizer):
    """All stages for one quantizer in this process; returns a dict of figures."""
    from geovq.artifacts import fit_cell_ids, load_latents
    from geovq.codebook import to_cells
    from geovq.data import subset_indices
    from geovq.kmedoids import fit_medoids
    from geovq.linking import link_new_cells
    from geovq.voronoi import assign_new
    from geovq.graph import bridge_components, knn_graph

    print(f"quantizer {quantizer}", flush=True)
    rec = {"quantizer": quantizer}
    stages = {}
    metric = quantizer if quantizer in METRIC_QUANTIZERS else None

    with Stage("load", stages):
        import torch

        from geovq.device import resolve_device
        from geovq.stages.runner import _set_threads

        _set_threads(args.threads)
        device = resolve_device(args.device)
        vae = None
        if metric is not None:
            from geovq.train import load_vae

            vae = load_vae(args.model, device)
        mu, _ = load_latents(args.latents)
        cells = to_cells(mu)
        node_ids = fit_cell_ids(len(cells), args.max_cells, args.seed)
        x = np.ascontiguousarray(cells[node_ids])
        del cells
    rec.update(device=str(device), threads=torch.get_num_threads(), n_cells_train=int(mu.size // mu.shape[1]))
    rec["precision"] = args.precision if metric is not None else None
    rec.update(n_nodes=len(node_ids), dim=int(x.shape[1]))
    print(
        f"  device {device}, torch threads {torch.get_num_threads()}; "
        f"{len(node_ids)} of {rec['n_cells_train']} train cells (dim {x.shape[1]}) as nodes",
        flush=True,
    )

    with Stage("knn_graph", stages):
        G, info = knn_graph(x, args.k, symmetrize="union", method="auto", exact_max=200_000, seed=args.seed)
        n_bridges = 0
        if info["n_components"] > 1:
            G, n_bridges = bridge_components(G, x)
    rec.update(
        knn_method=info["method"],
        recall=float(info.get("recall", 1.0)),
        n_edges=int(info["n_edges"]),
        n_components=int(info["n_components"]),
        n_bridges=int(n_bridges),
    )
    print(
        f"  kNN {info['method']}, recall {rec['recall']:.4f}, {info['n_edges']} edges, "
        f"{info['n_components']} components, {n_bridges} bridges",
        flush=True,
    )

    metrics = pull = None
    L = G
    if metric is not None:
        from geovq.device import keep_freed_memory
        from geovq.riemann import cell_metrics, edge_lengths_from_metrics, pullback

        with Stage("metrics", stages):
            keep_freed_memory()
            decode, weight = pull = pullback(vae, metric)
            metrics = cell_metrics(decode, mu, node_ids, weight=weight, device=device, precision=args.precision)
        with Stage("edge_lengths", stages):
            L = edge_lengths_from_metrics(G, x, metrics)
        ratio = L.data / np.maximum(G.data, 1e-30)
        rec["length_ratio_median"] = float(np.median(ratio))
        print(f"  {metric}/Euclidean edge length ratio median {rec['length_ratio_median']:.3g}", flush=True)
    del G

    with Stage("k-medoids", stages):
        m = {"init": "kmeans", "max_iter": args.max_iter, "swap": args.swap}
        km = fit_medoids(L, x, args.K, m, args.seed, threads=args.threads)  # medoid updates on every thread
    rec.update(
        K=args.K,
        n_iter=int(km.n_iter_),
        n_swaps=int(km.n_swaps_),
        objective_init=float(km.objective_[0]),
        objective=float(km.objective_[-1]),
        kmedoids_timings={k: float(v) for k, v in km.timings_.items()},
    )
    print(
        f"  K-medoids K={args.K}: objective {km.objective_[0]:.6g} (init) -> {km.objective_[-1]:.6g}, "
        f"{km.n_iter_} iterations, {km.n_swaps_} swaps",
        flush=True,
    )

    mu_test, _ = load_latents(args.latents_test)
    n_test_cells = mu_test.size // mu_test.shape[1]
    new_ids = subset_indices(n_test_cells, args.max_test_cells, args.seed * 1000 + 2)
    with Stage("test_codes", stages):
        nbr, lengths = link_new_cells(
            new_ids,
            mu_test,
            x,
            args.k,
            seed=args.seed,
            new_point_metric="exact",
            metrics_nodes=metrics,
            pull=pull,
            device=device,
            precision=args.precision,
        )
        codes, _ = assign_new(nbr, lengths, km.dist_, km.labels_)
    rec.update(n_test_cells=int(len(new_ids)), n_codes_used=int(np.unique(codes).size))
    print(f"  {len(new_ids)} of {n_test_cells} test cells coded, {rec['n_codes_used']} distinct codes", flush=True)

    rec["stages"] = stages
    rec["total_s"] = sum(v["s"] for v in stages.values())
    # VmHWM is reset per stage, so the process peak is the largest stage peak
    rec["peak_rss_mb"] = max(v["peak_rss_mb"] for v in stages.values())
    if device.type == "cuda":
        rec["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(f"  total {rec['total_s']:.1f} s, process peak RSS {rec['peak_rss_mb']:.0f} MB", flush=True)
    return rec


def run_subprocess(quantizer, threads):
    """This script with ``--one quantizer`` in a fresh interpreter; its output streamed, its figures returned."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # before numpy/torch/faiss start their pools
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--one", quantizer]
    t0 = time.perf_counter()
    rec = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            if line.startswith("JSON "):
                rec = json.loads(line[5:])
            else:
                print(line, end="", flush=True)
    if proc.returncode or rec is None:
        print(f"  {quantizer}: failed (exit {proc.returncode})", flush=True)
        return {"quantizer": quantizer, "failed": True, "returncode": proc.returncode}
    rec["process_s"] = time.perf_counter() - t0  # with interpreter start-up
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="VAE checkpoint (model.pt)")
    p.add_argument("--latents", required=True, help="train latents npz (key 'mu' (N, C, H, W))")
    p.add_argument("--latents-test", required=True, help="test latents npz")
    p.add_argument("--quantizers", default="riemannian,fisher", help=f"comma-separated, of {','.join(QUANTIZERS)}")
    p.add_argument("--k", type=int, default=20, help="neighbours per node (graph.k)")
    p.add_argument("--K", type=int, default=512, help="number of medoids")
    p.add_argument("--max-iter", type=int, default=5, help="K-medoids alternations")
    p.add_argument("--swap", action=argparse.BooleanOptionalAction, default=False, help="K-medoids swap rounds")
    p.add_argument("--max-cells", type=int, help="seeded subsample of train cells as nodes (default: all)")
    p.add_argument("--max-test-cells", type=int, help="seeded subsample of test cells to code (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision", default="float32", choices=["float32", "bfloat16"], help="graph.metric_precision of the metrics"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one quantizer, print JSON
    args = p.parse_args()
    if args.one is not None:
        rec = run_one(args, args.one)
        print("JSON " + json.dumps(rec), flush=True)
        return
    quantizers = [q.strip() for q in args.quantizers.split(",") if q.strip()]
    unknown = [q for q in quantizers if q not in QUANTIZERS]
    if unknown:
        p.error(f"--quantizers: unknown {unknown}; expected some of {list(QUANTIZERS)}")
    rows = []
    for q in quantizers:
        rows.append(run_subprocess(q, args.threads))
        print(flush=True)

    names = ("load", "knn_graph", "metrics", "edge_lengths", "k-medoids", "test_codes")
    print(
        f"Per stage (k = {args.k}, K = {args.K}, max_iter = {args.max_iter}, swap = {args.swap}, "
        f"metrics in {args.precision}):"
    )
    print(f"{'quantizer':<11} {'stage':<13} {'wall s':>9} {'cpu s':>9} {'peak RSS MB':>12}")
    for r in rows:
        if r.get("failed"):
            print(f"{r['quantizer']:<11} failed (exit {r['returncode']})")
            continue
        for name in names:
            if name in r["stages"]:
                s = r["stages"][name]
                print(f"{r['quantizer']:<11} {name:<13} {s['s']:>9.2f} {s['cpu_s']:>9.2f} {s['peak_rss_mb']:>12.0f}")
        print(f"{r['quantizer']:<11} {'total':<13} {r['total_s']:>9.2f} {'':>9} {r['peak_rss_mb']:>12.0f}")

    print(f"\nSummary (target: <= {TARGET_S} s and <= {TARGET_MB} MB on the 2-core machine):")
    print(
        f"{'quantizer':<11} {'device':<7} {'threads':>7} {'nodes':>9} {'iters':>5} {'objective':>11} "
        f"{'total s':>9} {'peak RSS MB':>12}"
    )
    for r in rows:
        if r.get("failed"):
            print(f"{r['quantizer']:<11} failed")
            continue
        print(
            f"{r['quantizer']:<11} {r['device']:<7} {r['threads']:>7} {r['n_nodes']:>9} {r['n_iter']:>5} "
            f"{r['objective']:>11.6g} {r['total_s']:>9.1f} {r['peak_rss_mb']:>12.0f}"
        )
    if args.json:
        out = {
            "args": {k: v for k, v in vars(args).items() if k not in ("one", "json")},
            "target": {"total_s": TARGET_S, "peak_rss_mb": TARGET_MB},
            "quantizers": rows,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
