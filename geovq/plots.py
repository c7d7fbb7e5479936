"""Figures for the report: matplotlib with a non-interactive backend, written atomically as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from geovq.io import atomic_path  # noqa: E402

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9})


def figure(width, height, dpi, ncols=1, nrows=1):
    """A figure of exactly width x height inches at dpi: the PNG is width*dpi x height*dpi pixels."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), dpi=dpi, squeeze=False)
    return fig, axes


def save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)  # no bbox_inches: keep the configured size
    plt.close(fig)


def image_grid(images, ncol):
    """(N, C, H, W) floats in [0, 1] -> one (rows*H, ncol*W, C) array with 1-pixel white gaps."""
    images = np.asarray(images, dtype=np.float32)
    n, c, h, w = images.shape
    nrow = -(-n // ncol)
    out = np.ones((nrow * (h + 1) - 1, ncol * (w + 1) - 1, c), np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        out[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = images[i].transpose(1, 2, 0)
    return out


def show(ax, grid, title=None):
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def rows_figure(path, rows, size):
    """One labelled row of images per entry of ``rows`` = [(label, images (N, C, H, W)), ...]."""
    width, height, dpi = size
    fig, axes = figure(width, height, dpi, nrows=len(rows))
    for ax, (label, images) in zip(axes[:, 0], rows):
        show(ax, image_grid(images, len(images)))
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.22, right=0.98, top=0.97, bottom=0.03, hspace=0.15)
    save(fig, path)


def curves(path, series, size, *, xlabel, ylabel, title=None, logy=False):
    """Line plot of ``series`` = {label: (x, y)}."""
    width, height, dpi = size
    fig, axes = figure(width, height, dpi)
    ax = axes[0, 0]
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if series:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)


def usage_histograms(path, counts, size):
    """Code frequencies sorted high to low, one panel per quantizer: ``counts`` = {name: (K,) counts}."""
    width, height, dpi = size
    fig, axes = figure(width, height, dpi, nrows=len(counts))
    for ax, (name, c) in zip(axes[:, 0], counts.items()):
        c = np.sort(np.asarray(c))[::-1]
        p = c / max(c.sum(), 1)
        ax.bar(np.arange(len(c)), p, width=1.0)
        used = int((c > 0).sum())
        ax.set_title(f"{name}: {used}/{len(c)} codes used")
        ax.set_ylabel("frequency")
    axes[-1, 0].set_xlabel("code rank")
    fig.tight_layout()
    save(fig, path)


def latent_map(path, xy, medoid_xy, geodesic_xy, straight_xy, size, title):
    """2-D projection of latent cells with medoids, a geodesic path and the straight line."""
    width, height, dpi = size
    fig, axes = figure(width, height, dpi)
    ax = axes[0, 0]
    ax.scatter(xy[:, 0], xy[:, 1], s=2, c="0.75", label="cells (graph nodes)", rasterized=True)
    ax.scatter(medoid_xy[:, 0], medoid_xy[:, 1], s=10, c="tab:red", label="medoids")
    ax.plot(geodesic_xy[:, 0], geodesic_xy[:, 1], "-o", c="tab:blue", ms=3, label="geodesic (graph shortest path)")
    ax.plot(straight_xy[:, 0], straight_xy[:, 1], "--", c="k", label="straight line")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    save(fig, path)


def bars(path, table, columns, size, title):
    """Grouped bars: one group per column, one bar per row label of ``table`` (a DataFrame indexed by name)."""
    width, height, dpi = size
    fig, axes = figure(width, height, dpi, ncols=len(columns))
    for ax, col in zip(axes[0], columns):
        ax.bar(table.index.astype(str), table[col], color=[f"C{i}" for i in range(len(table))])
        ax.set_title(col)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


ASSIGN_STYLE = {"geodesic": "-", "nearest": "--", "metric": ":", "decode": "-."}


def rate_distortion(path, df, size, title):
    """Distortion against rate, one curve per quantizer/assign over K, with 95 % bands over seeds
    and images (columns of geovq.ratedistortion.summary); a quantizer fitted at one K only (the
    VQ-VAE) is a point with error bars in both directions. Colour: quantizer; line style: assign
    (ASSIGN_STYLE), markers differ too, so the figure reads in grey print."""
    width, height, dpi = size
    metrics = [("mse_quant_real", "quant–real MSE (decoded codes vs real image)")]
    if np.isfinite(df["mse_quant_cont"]).any():
        metrics.append(("mse_quant_cont", "quant–cont MSE (vs the VAE's continuous decode)"))
    fig, axes = figure(width, height, dpi, ncols=len(metrics))
    markers = "osD^vP*X"
    quantizers = list(dict.fromkeys(df["quantizer"]))
    for ax, (col, label) in zip(axes[0], metrics):
        for (q, assign), g in df.groupby(["quantizer", "assign"], sort=False):
            g = g.sort_values("K")
            if not np.isfinite(g[col]).any():
                continue
            i = quantizers.index(q)
            style = dict(color=f"C{i}", marker=markers[i % len(markers)], ms=4, label=f"{q}/{assign}")
            if len(g) == 1:
                r = g.iloc[0]
                ax.errorbar(
                    r.rate_bits,
                    r[col],
                    xerr=[[r.rate_bits - r.rate_bits_lo], [r.rate_bits_hi - r.rate_bits]],
                    yerr=[[r[col] - r[f"{col}_lo"]], [r[f"{col}_hi"] - r[col]]],
                    ls="none",
                    capsize=3,
                    **{**style, "ms": 8, "color": "k", "marker": "*"},
                )
                continue
            ax.plot(g.rate_bits, g[col], ls=ASSIGN_STYLE.get(assign, "-."), **style)
            ax.fill_between(g.rate_bits, g[f"{col}_lo"], g[f"{col}_hi"], color=f"C{i}", alpha=0.15, lw=0)
        main = df[df.main_K & np.isfinite(df[col])]
        ax.scatter(main.rate_bits, main[col], s=60, facecolors="none", edgecolors="0.3", zorder=3)
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=8)
        ax.set_xlabel("rate (bits / image, unigram code length)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    handles, names = axes[0, 0].get_legend_handles_labels()  # the first panel has every series
    fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=9, frameon=False)
    K = sorted(df["K"].unique())
    fig.suptitle(f"{title}: K = {', '.join(map(str, K))} (circled: the main K)")
    rows = -(-len(names) // 5)
    fig.tight_layout(rect=(0, min(0.4, 0.07 * rows + 0.02), 1, 1))
    save(fig, path)


def contrast_forest(path, c, size, metric="mse_quant_real"):
    """Every contrast of ``metric`` as a relative difference (% of B's mean): the estimate with its
    interval over seeds and images (bar), and each seed's own mean paired difference (dots), one
    panel per dataset x variant (rows of geovq.study.contrasts). Filled: the interval excludes 0."""
    from geovq.study import seed_diffs_of

    width, height, dpi = size
    c = c[c["metric"] == metric]
    groups = list(c.groupby(["dataset", "variant"], sort=False))
    n_rows = max((len(g) for _, g in groups), default=1)
    fig, axes = figure(width, max(2.5, 0.32 * n_rows + 1.2), dpi, ncols=max(1, len(groups)))
    for ax, ((ds, var), g) in zip(axes[0], groups):
        y = np.arange(len(g))[::-1]
        for yi, (_, r) in zip(y, g.iterrows()):
            sig = r["diff_hi"] < 0 or r["diff_lo"] > 0
            pct = 100 * seed_diffs_of(r) / r["b_mean"] if r["b_mean"] else np.array([])
            ax.scatter(pct, np.full(len(pct), yi), s=9, color="0.45", zorder=2, lw=0)
            ax.plot([100 * r["rel_lo"], 100 * r["rel_hi"]], [yi, yi], color="C0", lw=2.5, zorder=1)
            ax.scatter([100 * r["rel_diff"]], [yi], s=36, zorder=3, color="C0" if sig else "white", edgecolors="C0")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(g["contrast"] if ax is axes[0, 0] else [], fontsize=8)
        ax.set_xlabel("A − B, % of B's mean", fontsize=9)
        ax.set_title(f"{ds}, {var}", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(
        f"{metric}: 95 % interval over seeds and images (bar), estimate (filled: excludes 0), each seed (dots)",
        fontsize=9,
    )
    fig.tight_layout()
    save(fig, path)
