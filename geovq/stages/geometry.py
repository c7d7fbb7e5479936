"""Stage of rules/geometry.smk: the geometry sheet of one VAE's latent graph (geovq.geometry).

Why the geodesic and Euclidean codebooks differ, or do not: how far each edge-length kind is
from a scaled Euclidean distance (ratios), how much the quantizers' train-cell labels agree,
which latent distance best predicts what replacing a test cell does to its decoded image, and
how well the stored (trapezoid) edge lengths approximate the path integral of the metric.
"""

from __future__ import annotations

import contextlib

import numpy as np

from geovq import plots
from geovq.artifacts import load_graph, load_latents, write_csv
from geovq.io import GeovqError, load_npz
from geovq.stages.runner import device_of

RATIO_STATS = ("n", "q05", "q25", "q50", "q75", "q95", "cv", "rel_iqr", "n_undefined")
EUCLIDEAN = "euclidean (straight line)"  # the reference every other latent distance is compared with
AGREEMENT_COLUMNS = ("a", "b", "n", "ari", "nmi")
PATH_COLUMNS = ("metric", "n_steps", "n", "mean", "std", "q05", "q25", "q50", "q75", "q95", "mean_abs")


def _by_name(paths, names):
    return dict(zip(names, paths))


def geometry(inp, out, params, log):
    from geovq import geometry as geo
    from geovq.assign import bernoulli_hellinger_features, image_distances
    from geovq.codebook import to_cells
    from geovq.graph import knn_query
    from geovq.riemann import cell_metrics, new_point_lengths, pullback
    from geovq.train import load_vae

    g = params.geometry
    device = device_of(params)
    Gg, d = load_graph(inp.graph, ("nodes", "x"))
    nodes, x = d["nodes"], d["x"]
    lengths = {"euclidean": Gg}
    files = {"euclidean": inp.graph, **_by_name(inp.lengths, params.metrics)}
    node_metrics = {}
    for m, path in _by_name(inp.lengths, params.metrics).items():
        L, dm = load_graph(path, ("nodes", "metrics"))
        if not np.array_equal(dm["nodes"], nodes):
            raise GeovqError(f"{path}: its graph nodes are not those of {inp.graph}")
        lengths[m], node_metrics[m] = L, dm["metrics"]
    model = load_vae(inp.model, device)
    mu_train, _ = load_latents(inp.latents_train)
    mu_test, _ = load_latents(inp.latents_test)
    rng_seed = params.seed

    # 1. geodesic / Euclidean ratios over random node pairs and along the kNN edges
    rows, ratios = [], {}
    for kind, L in lengths.items():
        with _naming(files[kind]):
            r = geo.distance_ratios(L, x, n_pairs=g["n_pairs"], n_sources=g["n_sources"], seed=rng_seed)
        ratios[kind] = r
        for row in r["summary"]:
            rows.append({"edge_lengths": kind, **{k: row[k] for k in ("kind", *RATIO_STATS)}})
            log(
                f"{kind} {row['kind']}: ratio median {row['q50']:.4g}, cv {row['cv']:.3g}, rel IQR {row['rel_iqr']:.3g}"
            )
    write_csv(out.ratios, rows)

    # 2. agreement of the quantizers' train-cell labels (the same train images for every quantizer)
    labels, index = {}, None
    for q, path in _by_name(inp.codes_train, params.quantizers).items():
        c = load_npz(path, ("codes", "image_index"))
        if index is not None and not np.array_equal(c["image_index"], index):
            raise GeovqError(f"{path}: codes of other train images than {inp.codes_train[0]}")
        index = c["image_index"]
        labels[q] = c["codes"].ravel()
    agreement = geo.label_agreement(labels) if len(labels) > 1 else []  # one quantizer: no pair
    write_csv(out.agreement, agreement, columns=AGREEMENT_COLUMNS)

    # 3. neighbourhood preservation: sampled test cells, each against its own pool of train nodes
    C, H, W = mu_test.shape[1:]
    rng = np.random.default_rng(rng_seed)
    T = min(g["n_test_cells"], len(mu_test) * H * W)
    test_cells = np.sort(rng.choice(len(mu_test) * H * W, size=T, replace=False))
    x_test = to_cells(mu_test)[test_cells]
    pools = geo.candidate_pools(T, len(nodes), g["pool"], seed=rng_seed)
    mean_decode, _ = pullback(model, "riemannian")  # the Bernoulli means p
    # two image-space targets: the mean images' L2 distance (what the riemannian metric is the local
    # form of, and what the study's MSE measures) and the Hellinger distance of the Bernoulli images
    # (what the fisher metric is the local form of): neither distance is favoured by construction
    targets = image_distances(
        mean_decode,
        mu_test,
        test_cells,
        x,
        pools,
        device=device,
        targets={"mean image L2": lambda p: p, "Bernoulli Hellinger": bernoulli_hellinger_features},
    )
    nbr, nbr_euc, _ = knn_query(x, x_test, params.graph_k, seed=rng_seed)
    latent = {EUCLIDEAN: geo.euclidean_to_pool(x_test, x, pools)}
    latent["graph geodesic (euclidean)"] = geo.new_cell_geodesic(Gg, nbr, nbr_euc.astype(np.float64), pools)
    for m in params.metrics:
        decode, weight = pullback(model, m)
        G_t = cell_metrics(decode, mu_test, test_cells, weight=weight, device=device, precision=params.precision)
        link = new_point_lengths(G_t, x_test, node_metrics[m], x, nbr)
        latent[f"graph geodesic ({m})"] = geo.new_cell_geodesic(lengths[m], nbr, link, pools)
        delta = x[pools] - x_test[:, None, :]  # (T, m, C): the metric at the test cell, no graph
        latent[f"{m} metric at the test cell"] = np.sqrt(
            np.maximum(np.einsum("tmc,tcd,tmd->tm", delta, G_t.astype(np.float64), delta), 0)
        )
    nbh = []
    for target, img in targets.items():
        rows, _ = geo.neighbourhood_preservation(
            img, latent, k=g["k"], n_boot=g["n_boot"], seed=rng_seed, reference=EUCLIDEAN
        )
        for row in rows:
            nbh.append({"target": target, **row})
            log(
                f"neighbourhood overlap with {target}, {row['distance']}: {row['overlap']:.3f} "
                f"[{row['lo']:.3f}, {row['hi']:.3f}]; minus straight line {row['diff']:+.3f} "
                f"[{row['diff_lo']:+.3f}, {row['diff_hi']:+.3f}]"
            )
    write_csv(out.neighbourhood, nbh)

    # 4. stored (trapezoid) edge lengths against the path integral of the metric
    rows, rel = [], {}
    for m in params.metrics:
        decode, weight = pullback(model, m)
        with _naming(files[m]):
            chk = geo.trapezoid_check(
                decode,
                mu_train,
                lengths[m],
                nodes,
                x,
                n_edges=g["n_edges"],
                n_steps=g["n_steps"],
                weight=weight,
                seed=rng_seed,
                device=device,
            )
        rel[m] = chk["rel_err"]
        rows.append({"metric": m, "n_steps": g["n_steps"], **chk["summary"]})
        log(f"{m}: trapezoid vs path integral, mean |rel. error| {chk['summary']['mean_abs']:.3g}")
    write_csv(out.path_integral, rows, columns=PATH_COLUMNS)  # no pull-back metric: a header only

    _figure(out.figure, ratios, nbh, agreement, rel, params)


@contextlib.contextmanager
def _naming(path):
    """A geovq.geometry complaint about the data (ValueError) as one line naming the file it came from."""
    try:
        yield
    except ValueError as e:
        raise GeovqError(f"{path}: {e}") from None


def _figure(path, ratios, nbh, agreement, rel, params):
    """Four panels: ratio distributions (scaled by their median), neighbourhood overlaps with their
    intervals, label agreement (ARI), trapezoid errors."""
    from matplotlib.ticker import NullFormatter

    r = params.report
    fig, axes = plots.figure(r["fig_width"], 0.75 * r["fig_width"], r["dpi"], ncols=2, nrows=2)
    ax = axes[0, 0]
    for kind, d in ratios.items():
        for what, style in (("pair_ratio", "-"), ("edge_ratio", ":")):
            v = d[what][np.isfinite(d[what])]
            if kind == "euclidean" and what == "edge_ratio":
                continue  # all 1 by construction
            if len(v):
                v = np.sort(v / np.median(v))
                ax.plot(v, np.linspace(0, 1, len(v)), style, label=f"{kind}, {what.split('_')[0]}s")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ratio / its median (flat: all 1)")
    ax.set_ylabel("cumulative fraction")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    ax = axes[0, 1]
    names = list(dict.fromkeys(row["distance"] for row in nbh))
    tgts = list(dict.fromkeys(row["target"] for row in nbh))
    height = 0.8 / max(len(tgts), 1)
    for i, tgt in enumerate(tgts):
        rows = [row for row in nbh if row["target"] == tgt]
        ov = np.array([row["overlap"] for row in rows])
        err = np.array([[row["overlap"] - row["lo"] for row in rows], [row["hi"] - row["overlap"] for row in rows]])
        y = np.arange(len(rows)) + (i - (len(tgts) - 1) / 2) * height
        ax.barh(y, ov, height=height, xerr=err, color=str(0.4 + 0.4 * i), edgecolor="k", capsize=2, label=tgt)
    if nbh:
        ax.axvline(nbh[0]["chance"], color="k", ls=":", label="chance")
        ax.set_xlabel(f"overlap with image-space {nbh[0]['k']}-NN (95 % CI)")
    ax.set_yticks(np.arange(len(names)), names, fontsize="x-small")
    ax.legend(fontsize="x-small")
    ax = axes[1, 0]
    qs = list(dict.fromkeys([a["a"] for a in agreement] + [a["b"] for a in agreement])) or list(params.quantizers)
    M = np.eye(len(qs))
    for a in agreement:
        i, j = qs.index(a["a"]), qs.index(a["b"])
        M[i, j] = M[j, i] = a["ari"]
    im = ax.imshow(M, vmin=0, vmax=1, cmap="Greys")
    for i in range(len(qs)):
        for j in range(len(qs)):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize="x-small", color="r")
    ax.set_xticks(range(len(qs)), qs, rotation=45, fontsize="x-small")
    ax.set_yticks(range(len(qs)), qs, fontsize="x-small")
    ax.set_title("train-cell labels: adjusted Rand index", fontsize="small")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, 1]
    for m, e in rel.items():
        e = np.sort(e[np.isfinite(e)])
        ax.plot(e, np.linspace(0, 1, len(e)), label=m)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("(stored − path integral) / path integral")
    ax.set_ylabel("cumulative fraction of edges")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{params.dataset} {params.variant} seed {params.seed}: latent geometry", fontsize="small")
    fig.tight_layout()
    plots.save(fig, path)
