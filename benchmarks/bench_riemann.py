"""Throughput of decoder-induced Riemannian metrics and edge lengths (geovq.riemann) against this machine's matmul roofline."""

from __future__ import annotations

import argparse
import copy
import math
import time
import types

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from geovq.device import keep_freed_memory
from geovq.jvp import for_jvp
from geovq.riemann import METHODS, cell_metrics, edge_lengths_from_metrics, edge_lengths_jvp


def conv_decoder(c=8):
    """Stand-in spatial decoder, shaped like geovq.models.ConvDecoder: (c, 4, 4) grid -> (1, 28, 28) mean, BN with non-trivial running stats."""
    net = nn.Sequential(
        nn.Conv2d(c, 32, 1),
        nn.Upsample(size=(7, 7)),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Upsample(size=(14, 14)),
        nn.Conv2d(32, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Upsample(size=(28, 28)),
        nn.Conv2d(16, 1, 3, padding=1),
        nn.Sigmoid(),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval(), (c, 4, 4)


def mlp_decoder(d=16):
    """Stand-in vanilla decoder: (d, 1, 1) grid -> (1, 28, 28) mean, 16 -> 512 -> 512 -> 784."""
    body = nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 784),
        nn.Sigmoid(),
        nn.Unflatten(1, (1, 28, 28)),
    )
    return body.eval(), (d, 1, 1)


def dcgan_decoder(c=8, width=256):
    """Issue 15's DCGAN-style decoder, random init: (c, 4, 4) grid -> 1x1 conv c -> width + BN +
    ReLU, then ConvTranspose2d(k=4, s=2, p=1) width -> width/2 -> width/4 (BN + ReLU) -> 1 and a
    Sigmoid: a (1, 32, 32) mean, 34 MFLOP/image at width 256 (12x the default spatial decoder)."""
    layers = [nn.Conv2d(c, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
    for c_in, c_out in ((width, width // 2), (width // 2, width // 4)):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
    net = nn.Sequential(*layers, nn.ConvTranspose2d(width // 4, 1, 4, 2, 1), nn.Sigmoid())
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval(), (c, 4, 4)


def forward_flops(decode, module, grid):
    """Multiply-add FLOPs (2 per MAC) of convs and linears in one image's forward pass."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            cin = m.in_channels if isinstance(m, nn.Conv2d) else m.out_channels
            macs = (
                (out.numel() if isinstance(m, nn.Conv2d) else inp[0].numel())
                * (cin // m.groups)
                * math.prod(m.kernel_size)
            )
            total[0] += 2 * macs
        elif isinstance(m, nn.Linear):
            total[0] += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            decode(torch.zeros(1, *grid))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def matmul_roofline(n=2048, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(10):  # warm-up
        a @ b
    best = min(_timed(lambda: a @ b)[1] for _ in range(reps))
    return 2 * n**3 / best / 1e9


def conv_roofline(reps=5):
    """fp32 GFLOP/s of a large channels_last 3x3 conv (256 -> 256 channels, 16x16, batch 64): oneDNN's
    direct convolution, which on some CPUs runs far above the BLAS matmul (measured 2.4x on the AMD
    EPYC host, where MKL's sgemm stays at ~170 GFLOP/s): the better estimate of the FMA peak."""
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(64, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(5):  # warm-up
            conv(x)
        best = min(_timed(lambda: conv(x))[1] for _ in range(reps))
    return 2 * 64 * 16 * 16 * 256 * 256 * 9 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def knn_csr(x, k, chunk=2048):
    """Symmetric (union) exact kNN graph of the rows of x by chunked torch distances."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    sq = (xt**2).sum(1)
    nbr = []
    for s in range(0, len(xt), chunk):
        d2 = sq[s : s + chunk, None] - 2 * xt[s : s + chunk] @ xt.T + sq[None]
        d2[torch.arange(d2.shape[0]), torch.arange(s, s + d2.shape[0])] = float("inf")
        nbr.append(d2.topk(k, largest=False).indices)
    nbr = torch.cat(nbr).numpy()
    A = sp.csr_matrix((np.ones(nbr.size), (np.repeat(np.arange(len(x)), k), nbr.ravel())), shape=(len(x),) * 2)
    return sp.csr_matrix(A.maximum(A.T))


def bench(name, decode, module, grid, args, rows):
    C, H, W = grid
    rng = np.random.default_rng(args.seed)
    n_img = math.ceil(args.n_cells / (H * W))
    Z = args.latents if args.latents is not None else rng.normal(size=(n_img, C, H, W)).astype(np.float32)
    n_cells = min(args.n_cells, Z.shape[0] * H * W)
    x = Z.transpose(0, 2, 3, 1).reshape(-1, C)[:n_cells]
    F = forward_flops(decode, module, grid)
    print(f"\n## {name}: grid {grid}, forward {F / 1e6:.2f} MFLOP/image, {n_cells} cells")

    graph, t_knn = _timed(lambda: knn_csr(x, args.k))
    E = graph.nnz // 2
    coo = sp.triu(graph, 1).tocoo()
    pick = rng.choice(len(coo.row), min(args.jvp_edges, len(coo.row)), replace=False)
    i, j = coo.row[pick], coo.col[pick]
    sample = rng.choice(n_cells, min(args.metric_cells, n_cells), replace=False)
    bs = args.batch_size

    # the paths are timed in interleaved rounds, best round kept: on a shared machine a
    # slow spell then hits every path alike instead of whichever happened to run in it
    paths = {m: (lambda m=m: cell_metrics(decode, Z, sample, method=m, batch_size=bs)) for m in METHODS}
    # the decoder as given, not rewritten by geovq.jvp.for_jvp (BN folded, upsample + conv fused)
    as_given = {f"{m}, decoder as given": m for m in ("stacked", "vmap_jvp")}
    for label, m in as_given.items():
        paths[label] = lambda m=m: cell_metrics(decode, Z, sample, method=m, batch_size=bs, fuse=False)
    # bfloat16: the decoder on a bfloat16 copy, J and G in float32 (cell_metrics' precision)
    low = {"stacked, bfloat16": "stacked"}
    for label, m in low.items():
        paths[label] = lambda m=m: cell_metrics(decode, Z, sample, method=m, batch_size=bs, precision="bfloat16")
    # every cell of the first images, in order, as the pipeline's metrics of whole images run:
    # cells of one image whose receptive fields are disjoint share a tangent (color=True, the
    # default), against a tangent per cell; the sample above has about one cell per image, so
    # colouring never engages there
    whole = np.arange(len(sample))
    colour = {"stacked, whole images, colours": True, "stacked, whole images, a tangent per cell": False}
    for label, c in colour.items():
        paths[label] = lambda c=c: cell_metrics(decode, Z, whole, method="stacked", batch_size=bs, color=c)
    paths["edge_jvp"] = lambda: edge_lengths_jvp(decode, Z, i, j, x[i], x[j], batch_size=bs)
    # reference: a no-grad forward pass of the same rewritten decoder over as many images as one
    # batch of the metric paths evaluates (bs cells x (1 + C) primal/tangent images), channels_last like it
    fwd_batch = torch.as_tensor(np.resize(Z, (bs * (1 + C), C, H, W))).contiguous(memory_format=torch.channels_last)
    fast_decode = for_jvp(decode)

    def forward_only():
        with torch.no_grad():
            return fast_decode(fwd_batch)

    paths["forward"] = forward_only
    for fn in paths.values():  # warm-up (first jvp loads torch's decompositions)
        fn()
    times = {k: [] for k in paths}
    out = {}
    for _ in range(args.rounds):
        for k, fn in paths.items():
            out[k], dt = _timed(fn)
            times[k].append(dt)
    best_t = {k: min(v) for k, v in times.items()}
    spread = {k: max(v) / min(v) for k, v in times.items()}

    # work per cell: primal + C tangents (fold_jvp: C primals + C tangents); per edge: 2 x (primal + tangent)
    work = {"stacked": (1 + C) * F, "vmap_jvp": (1 + C) * F, "vmap_jacfwd": (1 + C) * F, "fold_jvp": 2 * C * F}
    work.update({label: work[m] for label, m in (*as_given.items(), *low.items())})
    work.update(dict.fromkeys(colour, work["stacked"]))  # nominal: a tangent per cell
    rates = {m: len(sample) / best_t[m] for m in (*METHODS, *as_given, *low, *colour)}
    # float64 reference; per cell |G - G_ref|_F / |G_ref|_F. A cell whose ReLU pre-activation is
    # within float32 rounding of 0 gets a different (one-sided) Jacobian in float32: such kinks,
    # a few per 10 000 real cells, are counted apart from the median
    module64 = copy.deepcopy(module).double()
    decode64 = module64 if decode is module else types.MethodType(decode.__func__, module64)
    ref = cell_metrics(decode64, Z, sample, method="vmap_jvp", dtype=torch.float64, batch_size=bs)
    ref_whole = cell_metrics(decode64, Z, whole, method="vmap_jvp", dtype=torch.float64, batch_size=bs)
    for m in rates:
        r = ref_whole if m in colour else ref
        err = np.sqrt(((out[m] - r) ** 2).sum((1, 2)) / (r**2).sum((1, 2)))
        gf = work[m] * rates[m] / 1e9
        rows.append(
            (
                name,
                f"metrics {m}",
                f"{rates[m]:,.0f} cells/s",
                gf,
                f"rounds spread x{spread[m]:.2f}; vs float64: median {np.median(err):.0e}, "
                f"99th percentile {np.quantile(err, 0.99):.0e}, {int((err > 1e-3).sum())} cells > 1e-3",
            )
        )
    gf = F * len(fwd_batch) / best_t["forward"] / 1e9
    rows.append(
        (
            name,
            f"decoder forward only, batch {len(fwd_batch)}",
            f"{len(fwd_batch) / best_t['forward']:,.0f} images/s",
            gf,
            "no grad, the rewritten decoder's own forward (pixel shuffles, no phase chaining)",
        )
    )
    best = max(METHODS, key=rates.get)

    # metrics path on the whole graph, as the pipeline runs it (one cell_metrics call: its set-up,
    # for_jvp's copy and the trace, ~20 ms, is spread over all cells), best of the rounds; vs
    # per-edge JVP on a sample
    t_met = t_len = float("inf")
    for _ in range(args.rounds):
        metrics, t = _timed(lambda: cell_metrics(decode, Z, np.arange(n_cells), method=best, batch_size=bs))
        t_met = min(t_met, t)
        L, t = _timed(lambda: edge_lengths_from_metrics(graph, x, metrics))
        t_len = min(t_len, t)
    t_path = t_met + t_len
    rate_jvp = len(pick) / best_t["edge_jvp"]
    pos = out["edge_jvp"] > 0  # duplicate cells: 0 by JVP, the positive floor by the metrics path
    err = float(np.max(np.abs(np.asarray(L[i, j]).ravel() - out["edge_jvp"])[pos] / out["edge_jvp"][pos]))
    print(
        f"kNN k={args.k}: {E:,} undirected edges ({t_knn:.1f} s); whole graph via metrics: cell_metrics "
        f"{t_met:.2f} s + edge_lengths_from_metrics {t_len:.2f} s; per-edge JVP {len(pick)} edges "
        f"{best_t['edge_jvp']:.1f} s (best of {args.rounds}); max rel diff of the two paths {err:.1e}"
    )
    gf = work[best] * n_cells / t_path / 1e9
    rows.append(
        (
            name,
            f"edges via metrics ({best})",
            f"{E / t_path:,.0f} edges/s",
            gf,
            f"{t_path:.1f} s for {E:,} edges (best of {args.rounds})",
        )
    )
    gf = 4 * F * rate_jvp / 1e9
    rows.append(
        (
            name,
            "edges via per-edge JVP",
            f"{rate_jvp:,.0f} edges/s",
            gf,
            f"~{E / rate_jvp:.0f} s for {E:,} edges: metrics path x{(E / rate_jvp) / t_path:.1f} faster",
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-cells", type=int, default=20_000, help="graph nodes (cells)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument(
        "--metric-cells",
        type=int,
        default=2048,
        help="cells timed per metric method and round (one cell_metrics call each)",
    )
    p.add_argument("--jvp-edges", type=int, default=1024, help="edges timed on the per-edge JVP path per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the best is kept")
    p.add_argument("--batch-size", type=int, default=128, help="cells per chunk (cell_metrics' default)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--checkpoint", help="geovq VAE checkpoint (geovq.train.load_vae) instead of the stand-ins")
    p.add_argument(
        "--latents",
        help="latent grids (N, C, H, W) instead of N(0, 1) samples: a .npy, or the "
        "pipeline's latents_train.npz (key 'mu')",
    )
    p.add_argument("--only", choices=["conv", "mlp", "dcgan"], help="benchmark one stand-in only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc malloc's defaults (the pipeline's metric jobs call geovq.device.keep_freed_memory)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # as in the pipeline's metric jobs (geovq.stages.geodesic): glibc malloc keeps freed memory
    kept = keep_freed_memory() if not args.default_malloc else False
    torch.manual_seed(args.seed)
    if args.latents:
        arr = np.load(args.latents)
        args.latents = (arr["mu"] if isinstance(arr, np.lib.npyio.NpzFile) else arr).astype(np.float32)

    roof, conv_peak = matmul_roofline(), conv_roofline()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 2048x2048 matmul: {roof:.0f} GFLOP/s; "
        f"fp32 3x3 conv 256 -> 256: {conv_peak:.0f} GFLOP/s; malloc keeps freed memory: {kept}"
    )
    rows = []
    if args.checkpoint:
        from geovq.train import load_vae

        model = load_vae(args.checkpoint)
        bench(args.checkpoint, model.decode, model, tuple(model.latent_shape), args, rows)
    else:
        for name, build in [("conv 8x4x4", conv_decoder), ("mlp 16", mlp_decoder), ("dcgan 8x4x4", dcgan_decoder)]:
            if args.only and not name.startswith(args.only):
                continue
            module, grid = build()
            bench(name, module, module, grid, args, rows)

    # the rates of the machine drift (a cold start ran at 60 % of later rates): each roofline is
    # measured before and after, and the higher of the two is the reference
    roof_end, conv_end = matmul_roofline(), conv_roofline()
    print(
        f"\nfp32 matmul at the end: {roof_end:.0f} GFLOP/s (start {roof:.0f}); 3x3 conv {conv_end:.0f} GFLOP/s "
        f"(start {conv_peak:.0f}); the shares below are of the higher of each pair. GFLOP/s "
        f"counts the decoder's conv/linear FLOPs for what each path computes: 1 + C forward passes per "
        f"cell (fold_jvp 2C: it recomputes the primal C times); bfloat16 rows count the same FLOPs against "
        f"the fp32 rates. Extra FLOPs a path executes are not counted: "
        f"'stacked' runs the spatial decoder's last layer as a coarse-grid phase conv, 4x that layer's FLOPs."
    )
    roof, conv_peak = max(roof, roof_end), max(conv_peak, conv_end)
    rows = [(*r[:3], f"{r[3]:.1f}", f"{100 * r[3] / roof:.1f} % / {100 * r[3] / conv_peak:.1f} %", r[4]) for r in rows]
    head = ("decoder", "path", "throughput", "GFLOP/s", f"of fp32 matmul {roof:.0f} / conv {conv_peak:.0f}", "note")
    widths = [max(len(str(r[c])) for r in rows + [head]) for c in range(len(head))]
    print()
    for r in [head, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
