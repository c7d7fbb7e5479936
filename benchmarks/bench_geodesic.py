"""Benchmark of the geometry core: kNN graph, bridging, geodesic k-medoids, new-point codes; and FasterPAM gap.

Prints wall time and peak memory per stage for each size, the objective against
FasterPAM on the dense geodesic matrix at one small size, and a scaling table.
Each size runs in a fresh subprocess so that its peak RSS is its own.

    python benchmarks/bench_geodesic.py                        # 10k and 100k cells, FasterPAM at 10k
    python benchmarks/bench_geodesic.py --sizes 1000000 --no-fasterpam
    python benchmarks/bench_geodesic.py --latents results/x/latents.npz --sizes 60000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from geovq.graph import bridge_components, knn_graph, knn_query  # noqa: E402
from geovq.kmedoids import GeodesicKMedoids  # noqa: E402
from geovq.voronoi import assign_new  # noqa: E402


def gaussian_mixture(n, c=16, n_comp=32, seed=0):
    """Stand-in latents: n cells from a 16-d mixture of 32 isotropic Gaussians of unequal widths."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(n_comp, c))
    scales = rng.uniform(0.3, 1.5, size=n_comp)
    comp = rng.integers(n_comp, size=n)
    return (means[comp] + rng.normal(size=(n, c)) * scales[comp, None]).astype(np.float32)


def load_cells(path, n, n_new, seed):
    """Cells (rows) of real latents `mu` (N, C, H, W) -> (N*H*W, C): a seeded subsample of n
    for the graph and n_new other cells as new vectors."""
    mu = np.load(path)["mu"]
    cells = np.ascontiguousarray(np.moveaxis(mu, 1, -1).reshape(-1, mu.shape[1]), dtype=np.float32)
    perm = np.random.default_rng(seed).permutation(cells.shape[0])
    n = min(n, cells.shape[0] - n_new)
    return cells[np.sort(perm[:n])], cells[perm[n : n + n_new]]


def _rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


class Stage:
    """Times a block and records its peak RSS (Linux: VmHWM reset through clear_refs).

    With ``trace=True`` it also records the peak of Python/numpy allocations (tracemalloc);
    that slows allocation-heavy Python code several-fold, so the times are then not the real ones."""

    trace = False

    def __init__(self, name, out):
        self.name, self.out = name, out

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            self.reset = False
        if self.trace:
            tracemalloc.start()
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.t0
        cpu = time.process_time() - self.c0
        py_peak = float("nan")
        if self.trace:
            _, py_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        peak = _rss_mb("VmHWM") if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.out[self.name] = {"s": seconds, "cpu_s": cpu, "peak_rss_mb": peak, "numpy_peak_mb": py_peak / 2**20}
        # cpu: all threads; wall/cpu shows how much of the machine the stage got
        traced = f"   (numpy/python allocations {py_peak / 2**20:7.0f} MB)" if self.trace else ""
        print(f"  {self.name:<12} {seconds:8.2f} s (cpu {cpu:7.2f} s)   peak RSS {peak:8.0f} MB{traced}", flush=True)


def run_size(args, n):
    """All stages at one size; returns a dict of figures."""
    print(f"N = {n} cells", flush=True)
    rec = {"n": n}
    stages = {}
    if args.latents:
        x, new = load_cells(args.latents, n, args.n_new, args.seed)
    else:  # new vectors: other draws from the same mixture
        x = gaussian_mixture(n + args.n_new, seed=args.seed)
        x, new = x[:n], x[n:]
    n = rec["n"] = x.shape[0]
    with Stage("knn_graph", stages):
        G, info = knn_graph(x, args.k, seed=args.seed)
    rec.update(method=info["method"], recall=info["recall"], n_edges=info["n_edges"], n_components=info["n_components"])
    with Stage("bridging", stages):
        G, n_bridges = bridge_components(G, x)
    rec["n_bridges"] = n_bridges
    km = GeodesicKMedoids(
        args.n_codes,
        init="kmeans",
        seed=args.seed,
        swap=not args.no_swap,
        max_iter=args.max_iter,
        max_swap_rounds=args.max_swap_rounds,
        verbose=args.verbose,
    )
    with Stage("k-medoids", stages):
        km.fit(G, x)
    rec.update(
        objective=km.objective_[-1],
        objective_init=km.objective_[0],
        n_iter=km.n_iter_,
        n_swaps=km.n_swaps_,
        timings=km.timings_,
    )
    with Stage("assign_new", stages):
        # exact search: 10k queries cost less than building an HNSW index over all cells
        idx, _, _ = knn_query(x, new, args.k, method="exact", seed=args.seed)
        lengths = np.linalg.norm(x[idx] - new[:, None, :], axis=2)  # Euclidean links here
        codes, _ = assign_new(idx, lengths, km.dist_, km.labels_)
    rec["n_new"] = int(codes.size)
    rec["stages"] = stages
    # VmHWM is reset per stage, so the process peak is the largest stage peak
    rec["peak_rss_mb"] = max(v["peak_rss_mb"] for v in stages.values())
    print(
        f"  k-medoids: objective {km.objective_[0]:.6g} (init) -> {km.objective_[-1]:.6g}, "
        f"{km.n_iter_} iterations, {km.n_swaps_} swaps, {json.dumps({k: round(v, 1) for k, v in km.timings_.items()})}"
    )
    print(f"  process peak RSS {rec['peak_rss_mb']:.0f} MB", flush=True)
    if args.fasterpam and n <= args.fasterpam_max:
        rec.update(fasterpam_gap(args, G, x, km))
    return rec


def fasterpam_gap(args, G, x, km):
    """Objective of FasterPAM (kmedoids package) on the dense geodesic matrix, same K."""
    import kmedoids
    from scipy.sparse.csgraph import dijkstra

    t0 = time.perf_counter()
    D = np.empty(G.shape, dtype=np.float32)
    step = 1000
    for s in range(0, G.shape[0], step):  # float64 rows, stored as float32: half the memory
        D[s : s + step] = dijkstra(G, directed=True, indices=np.arange(s, min(s + step, G.shape[0])))
    t_matrix = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = kmedoids.fasterpam(D, args.n_codes, init="random", random_state=args.seed, max_iter=100)
    t_pam = time.perf_counter() - t0
    ours = km.objective_[-1]
    gap = 100 * (ours / res.loss - 1)
    print(
        f"  FasterPAM: objective {res.loss:.6g} ({t_matrix:.1f} s dense matrix of {D.nbytes / 2**20:.0f} MB, "
        f"{t_pam:.1f} s FasterPAM); geodesic k-medoids {ours:.6g} -> gap {gap:+.2f} %",
        flush=True,
    )
    del D
    rec = {"fasterpam": float(res.loss), "fasterpam_s": t_pam, "matrix_s": t_matrix, "gap_pct": gap}
    for init in ("kmeans", "random"):  # the same search without swaps, and from a random init
        for swap in (False, True):
            t0 = time.perf_counter()
            m = GeodesicKMedoids(args.n_codes, init=init, seed=args.seed, swap=swap).fit(G, x)
            g = 100 * (m.objective_[-1] / res.loss - 1)
            rec[f"gap_{init}_{'swap' if swap else 'noswap'}"] = g
            print(
                f"    init={init:<7} swap={swap!s:<5}: objective {m.objective_[-1]:.6g}, gap {g:+.2f} %, "
                f"{time.perf_counter() - t0:.1f} s, {m.n_iter_} iterations",
                flush=True,
            )
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of cells")
    p.add_argument("--latents", help="npz with key 'mu' (N, C, H, W); default: Gaussian-mixture stand-in")
    p.add_argument("--k", type=int, default=20, help="neighbours per node")
    p.add_argument("--n-codes", type=int, default=512, help="K, number of medoids")
    p.add_argument("--max-iter", type=int, default=20)
    p.add_argument("--max-swap-rounds", type=int, default=100)
    p.add_argument("--no-swap", action="store_true")
    p.add_argument("--n-new", type=int, default=10000, help="new vectors coded by assign_new")
    p.add_argument("--no-fasterpam", dest="fasterpam", action="store_false")
    p.add_argument("--fasterpam-max", type=int, default=10000, help="largest N to compare with FasterPAM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--trace-alloc",
        action="store_true",
        help="also the peak of Python/numpy allocations per stage (tracemalloc; slows the stages)",
    )
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = p.parse_args()
    Stage.trace = args.trace_alloc
    if args.one is not None:
        rec = run_size(args, args.one)
        print("JSON " + json.dumps(rec), flush=True)
        return
    rows = []
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--sizes")]
    if "--sizes" in sys.argv:
        i = sys.argv.index("--sizes")
        passthrough = sys.argv[1:i] + sys.argv[i + 2 :]
    for n in [int(s) for s in args.sizes.split(",")]:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n)] + passthrough, stdout=subprocess.PIPE, text=True
        )
        out = proc.stdout
        print("\n".join(l for l in out.splitlines() if not l.startswith("JSON ")), flush=True)
        js = [l[5:] for l in out.splitlines() if l.startswith("JSON ")]
        if proc.returncode or not js:
            print(f"  N = {n}: failed (exit {proc.returncode})")
            continue
        rows.append(json.loads(js[0]))
    print("\nScaling (k = %d, K = %d):" % (args.k, args.n_codes))
    print(
        f"{'N':>9} {'kNN':>5} {'recall':>6} {'comp':>5} {'graph s':>8} {'bridge s':>8} {'kmed s':>8} {'iters':>5} "
        f"{'swaps':>5} {'assign s':>8} {'total s':>8} {'peak MB':>8} {'objective':>11} {'vs PAM':>7}"
    )
    for r in rows:
        s = r["stages"]
        total = sum(v["s"] for v in s.values())
        gap = f"{r['gap_pct']:+.2f}%" if "gap_pct" in r else "-"
        print(
            f"{r['n']:>9} {r['method']:>5} {r['recall']:>6.4f} {r['n_components']:>5} {s['knn_graph']['s']:>8.1f} "
            f"{s['bridging']['s']:>8.1f} {s['k-medoids']['s']:>8.1f} {r['n_iter']:>5} {r['n_swaps']:>5} "
            f"{s['assign_new']['s']:>8.1f} {total:>8.1f} {r['peak_rss_mb']:>8.0f} {r['objective']:>11.6g} {gap:>7}"
        )


if __name__ == "__main__":
    main()
