"""Geometry sheet: measurements that say why geodesic and Euclidean codebooks differ, or do not."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra
from torch.func import jvp

from geovq.assign import _check_pools
from geovq.jvp import for_jvp
from geovq.riemann import _check_grid, _evaluating, _layout, _resolve_device, _split_cells

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _check_lengths(L, x=None):
    if not sp.issparse(L) or L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"L: expected a square scipy.sparse matrix, got {type(L).__name__}")
    L = sp.csr_matrix(L, dtype=np.float64)
    if L.nnz and not (L.data >= 0).all():
        raise ValueError("L: edge lengths must be >= 0 and not NaN")
    if (L != L.T).nnz:
        raise ValueError("L: edge lengths must be symmetric (an undirected graph)")
    if x is not None and (x.ndim != 2 or x.shape[0] != L.shape[0]):
        raise ValueError(f"x: expected ({L.shape[0]}, C) node vectors, got shape {x.shape}")
    return L


def summary(values) -> dict:
    """n, mean, std and the QUANTILES (q05 ... q95) of the finite entries of `values`; NaN where there are none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    row = {"n": int(v.size), "mean": float(v.mean()) if v.size else np.nan, "std": float(v.std()) if v.size else np.nan}
    q = np.quantile(v, QUANTILES) if v.size else np.full(len(QUANTILES), np.nan)
    row.update({f"q{round(100 * p):02d}": float(x) for p, x in zip(QUANTILES, q)})
    return row


def ratio_summary(ratios) -> dict:
    """`summary` plus two measures of spread that are 0 exactly when all ratios are equal (a flat
    geometry up to scale): cv = std / mean and rel_iqr = (q75 − q25) / q50."""
    row = summary(ratios)
    row["cv"] = row["std"] / row["mean"] if row["n"] else np.nan
    row["rel_iqr"] = (row["q75"] - row["q25"]) / row["q50"] if row["n"] else np.nan
    return row


def _sample_pairs(n, n_pairs, n_sources, rng):
    """Random pairs (source, target ≠ source) with sources drawn from n_sources distinct seeded nodes."""
    sources = rng.choice(n, size=min(n_sources, n), replace=False)
    src = sources[rng.integers(len(sources), size=n_pairs)]
    dst = rng.integers(n - 1, size=n_pairs)
    dst += dst >= src  # uniform over the other n − 1 nodes
    return np.stack([src, dst], axis=1).astype(np.int64)


def pair_geodesics(L, pairs, *, chunk=64) -> np.ndarray:
    """Graph-geodesic distances (P,) float64 between the node pairs (P, 2) on symmetric lengths L
    (inf where unreachable): one Dijkstra run from each distinct first node, `chunk` sources at a
    time (memory chunk x N x 8 bytes)."""
    L = _check_lengths(L)
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs.size and (pairs.min() < 0 or pairs.max() >= L.shape[0])):
        raise ValueError(f"pairs: expected (P, 2) node ids in [0, {L.shape[0]}), got shape {pairs.shape}")
    sources, inv = np.unique(pairs[:, 0], return_inverse=True)
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(sources), chunk):
        d = dijkstra(L, directed=True, indices=sources[s : s + chunk])  # L symmetric: directed is faster
        sel = np.flatnonzero((inv >= s) & (inv < s + chunk))
        out[sel] = d[inv[sel] - s, pairs[sel, 1]]
    return out


def distance_ratios(L, x, *, pairs=None, n_pairs=20_000, n_sources=256, seed=0, chunk=64) -> dict:
    """How far graph lengths are from Euclidean ones, over random node pairs and along the edges.

    Parameters
    ----------
    L : (N, N) sparse, symmetric edge lengths of the kNN graph (any kind: Euclidean, Riemannian, ...).
    x : (N, C) node vectors.
    pairs : (P, 2) node ids, optional; default n_pairs seeded random pairs whose first nodes are
        n_sources distinct seeded nodes (Dijkstra runs from those only), second nodes uniform
        over the other nodes.

    Returns
    -------
    dict with
      pairs (P, 2) int64, geodesic (P,) float64 (Dijkstra on L), euclidean (P,) ‖x_i − x_j‖,
      pair_ratio (P,) = geodesic / euclidean;
      edges (E, 2) int64 (each undirected edge once, i < j), edge_length (E,), edge_euclidean (E,),
      edge_ratio (E,) = L_ij / ‖x_i − x_j‖;
      summary: two rows (kind "pairs", "edges") of `ratio_summary` plus n_undefined, the ratios
      left out because the Euclidean distance is 0 (duplicate vectors) or the pair is unreachable
      (those ratios are NaN / inf in the arrays).
    With Euclidean lengths every edge ratio is 1 and every pair ratio >= 1 (triangle inequality).
    """
    x = np.asarray(x)
    L = _check_lengths(L, x)
    if pairs is None:
        pairs = _sample_pairs(L.shape[0], n_pairs, n_sources, np.random.default_rng(seed))
    pairs = np.asarray(pairs, dtype=np.int64)
    geo = pair_geodesics(L, pairs, chunk=chunk)
    euc = np.linalg.norm(x[pairs[:, 0]].astype(np.float64) - x[pairs[:, 1]], axis=1)
    up = sp.triu(L, k=1).tocoo()
    edges = np.stack([up.row, up.col], axis=1).astype(np.int64)
    e_euc = np.linalg.norm(x[up.row].astype(np.float64) - x[up.col], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pair_ratio = np.where(euc > 0, geo / euc, np.nan)
        edge_ratio = np.where(e_euc > 0, up.data / e_euc, np.nan)
    rows = []
    for kind, r in (("pairs", pair_ratio), ("edges", edge_ratio)):
        row = {"kind": kind, **ratio_summary(r)}
        row["n_undefined"] = int((~np.isfinite(r)).sum())
        rows.append(row)
    return {
        "pairs": pairs,
        "geodesic": geo,
        "euclidean": euc,
        "pair_ratio": pair_ratio,
        "edges": edges,
        "edge_length": up.data.copy(),
        "edge_euclidean": e_euc,
        "edge_ratio": edge_ratio,
        "summary": rows,
    }


def label_agreement(labels: dict) -> list[dict]:
    """Adjusted Rand index and normalized mutual information (sklearn, arithmetic normalization) of
    every unordered pair of labelings in `labels` {name: (M,) int array of codes of the same cells},
    as rows {a, b, n, ari, nmi} in the dict's order. Both are 1 for labelings equal up to renaming."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # 1.5 s to import: here only

    names = list(labels)
    arrays = {name: np.asarray(labels[name]) for name in names}
    shapes = {a.shape for a in arrays.values()}
    if len(names) < 2 or len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"labels: expected >= 2 labelings as equal-length 1-D arrays, got shapes {shapes}")
    return [
        {
            "a": a,
            "b": b,
            "n": int(arrays[a].size),
            "ari": float(adjusted_rand_score(arrays[a], arrays[b])),
            "nmi": float(normalized_mutual_info_score(arrays[a], arrays[b])),
        }
        for a, b in itertools.combinations(names, 2)
    ]


# --- neighbourhood preservation -----------------------------------------------------------------


def candidate_pools(n_test, n_nodes, m=500, *, seed=0) -> np.ndarray:
    """(n_test, min(m, n_nodes)) int64: per test cell a seeded random pool of distinct train nodes,
    sorted; every neighbour set of `neighbourhood_preservation` is taken within its cell's pool."""
    if n_nodes < 1 or m < 1:
        raise ValueError(f"need n_nodes >= 1 and m >= 1, got n_nodes={n_nodes}, m={m}")
    m = min(m, n_nodes)
    if m == n_nodes:
        return np.tile(np.arange(n_nodes, dtype=np.int64), (n_test, 1))
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(n_nodes, size=m, replace=False)) for _ in range(n_test)]).astype(np.int64)


def euclidean_to_pool(x_test, x_nodes, pools) -> np.ndarray:
    """‖x_test[t] − x_nodes[pools[t, j]]‖ (T, m) float64."""
    x_test, x_nodes = np.asarray(x_test, np.float64), np.asarray(x_nodes)
    pools = _check_pools(pools, len(x_nodes))
    if x_test.shape != (pools.shape[0], x_nodes.shape[1]):
        raise ValueError(f"x_test: expected shape ({pools.shape[0]}, {x_nodes.shape[1]}), got {x_test.shape}")
    return np.linalg.norm(x_nodes[pools] - x_test[:, None, :], axis=2)


def new_cell_geodesic(L, link_nbr, link_len, targets=None, *, chunk=256) -> np.ndarray:
    """Graph-geodesic distances from new cells, linked to graph nodes, to target nodes.

    d(t, j) = min over the links i of t (link_len[t, i] + d_L(link_nbr[t, i], j)), the distance
    `geovq.voronoi.assign_new` uses to code t. Computed exactly by one Dijkstra run per new cell
    from a virtual node with out-edges only, to its links (no path can pass through it), `chunk`
    cells at a time (memory chunk x N x 8 bytes).

    Parameters
    ----------
    L : (N, N) sparse, symmetric graph edge lengths.
    link_nbr : (T, k) node ids of each new cell's links (< 0: no link, ignored); link_len (T, k)
        their lengths (Euclidean from geovq.graph.knn_query, or geovq.riemann.new_point_lengths for
        metric kinds). A zero link (a new cell equal to a node) is kept: dijkstra reads an explicitly
        stored zero of a sparse matrix as a zero-length edge.
    targets : (T, m) node ids (e.g. `candidate_pools`), or None for all N nodes.

    Returns
    -------
    (T, m) float64 (or (T, N)); inf where unreachable.
    """
    L = _check_lengths(L)
    N = L.shape[0]
    link_nbr = np.asarray(link_nbr)
    link_len = np.asarray(link_len, dtype=np.float64)
    if link_nbr.ndim != 2 or link_nbr.shape != link_len.shape or link_nbr.max(initial=-1) >= N:
        raise ValueError(f"link_nbr {link_nbr.shape} and link_len {link_len.shape}: equal (T, k), ids < {N}")
    if np.isnan(link_len).any() or (link_len < 0).any():
        raise ValueError("link_len: lengths must be >= 0 and not NaN")
    T = link_nbr.shape[0]
    if targets is not None:
        targets = _check_pools(targets, N)
        if targets.shape[0] != T:
            raise ValueError(f"targets: {targets.shape[0]} rows for {T} new cells")
    out = np.empty((T, N if targets is None else targets.shape[1]), dtype=np.float64)
    for s in range(0, T, chunk):
        nbr, ln = link_nbr[s : s + chunk], link_len[s : s + chunk]
        b = len(nbr)
        r, c = np.nonzero(nbr >= 0)
        col, val = nbr[r, c], ln[r, c]
        order = np.lexsort((val, col, r))  # a node linked twice keeps its shorter link (csr would sum them)
        r, col, val = r[order], col[order], val[order]
        first = np.r_[True, (r[1:] != r[:-1]) | (col[1:] != col[:-1])]
        links = sp.csr_matrix((val[first], (r[first], col[first])), shape=(b, N + b))
        A = sp.vstack([sp.csr_matrix((L.data, L.indices, L.indptr), shape=(N, N + b)), links], format="csr")
        d = dijkstra(A, directed=True, indices=N + np.arange(b))[:, :N]
        out[s : s + b] = d if targets is None else np.take_along_axis(d, targets[s : s + b], axis=1)
    return out


def _k_nearest(d, k):
    """Positions (T, k) of each row's k smallest entries; ties go to the lower position."""
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def neighbourhood_preservation(
    image_dist, latent, *, pools=None, k=10, n_boot=1000, level=0.95, seed=0, reference=None
):
    """Do the latent distances pick the train nodes that change the decoded image least?

    For each test cell t the overlap |N_k^latent(t) ∩ N_k^image(t)| / k of its k nearest pool nodes
    under a latent distance and under the image distance (`image_distances`), all within the same
    pool of m nodes (`candidate_pools`); 1 means the latent distance ranks the k best replacements
    exactly, k / m is the expected overlap of a random ranking.

    Parameters
    ----------
    image_dist : (T, m) image distances.
    latent : {name: (T, m) array, or callable(pools) -> (T, m) array}, e.g. `euclidean_to_pool`,
        `new_cell_geodesic` for each edge-length kind. NaN is refused, inf ranks last.
    pools : (T, m) node ids, passed to the callables (required if there are any).
    k : neighbours compared; n_boot, level, seed: the interval (below).

    Returns
    -------
    rows : one per latent distance {distance, k, m, n_test, overlap (mean over test cells), lo, hi,
        chance = k / m}; (lo, hi) is the percentile bootstrap interval at `level` of the mean
        overlap, resampling test cells with replacement n_boot times (seeded; the same resamples
        for every distance, so the intervals are paired).
    overlap : {name: (T,) float64 per-cell overlaps}.
    reference : a name of `latent`: each row then also has diff (its mean overlap minus the
        reference's over the same test cells) and its paired interval (diff_lo, diff_hi) from the
        same resamples.
    """
    img = np.asarray(image_dist, dtype=np.float64)
    if img.ndim != 2 or np.isnan(img).any():
        raise ValueError(f"image_dist: expected a (T, m) array without NaN, got shape {img.shape}")
    T, m = img.shape
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= m):
        raise ValueError(f"k={k!r} must be an integer in [1, m={m}]")
    rows_t = np.arange(T)[:, None]
    in_img = np.zeros((T, m), dtype=bool)
    in_img[rows_t, _k_nearest(img, k)] = True
    boot = np.random.default_rng(seed).integers(T, size=(n_boot, T))
    alpha = (1 - level) / 2
    rows, overlap = [], {}
    for name, d in latent.items():
        if callable(d):
            if pools is None:
                raise ValueError(f"latent[{name!r}] is a function: pass the pools it is evaluated on")
            d = d(pools)
        d = np.asarray(d, dtype=np.float64)
        if d.shape != (T, m) or np.isnan(d).any():
            raise ValueError(f"latent[{name!r}]: expected a ({T}, {m}) array without NaN, got shape {d.shape}")
        ov = in_img[rows_t, _k_nearest(d, k)].sum(axis=1) / k
        means = ov[boot].mean(axis=1)
        lo, hi = np.quantile(means, [alpha, 1 - alpha])
        overlap[name] = ov
        rows.append(
            {
                "distance": name,
                "k": int(k),
                "m": int(m),
                "n_test": int(T),
                "overlap": float(ov.mean()),
                "lo": float(lo),
                "hi": float(hi),
                "chance": k / m,
            }
        )
    if reference is not None:
        if reference not in overlap:
            raise ValueError(f"reference={reference!r} is not one of the latent distances {list(overlap)}")
        ref = overlap[reference]
        for row in rows:
            d = overlap[row["distance"]] - ref
            lo, hi = np.quantile(d[boot].mean(axis=1), [alpha, 1 - alpha])
            row.update(reference=reference, diff=float(d.mean()), diff_lo=float(lo), diff_hi=float(hi))
    return rows, overlap


# --- path integrals -------------------------------------------------------------------------------


def _quadrature(n_steps, n_points):
    """Nodes (Q,) in (0, 1) and weights (Q,) summing to 1 of composite n_points Gauss–Legendre on
    n_steps equal subintervals (n_points = 1: the midpoint rule)."""
    xi, wi = np.polynomial.legendre.leggauss(n_points)
    t = (np.arange(n_steps)[:, None] + (xi[None] + 1) / 2) / n_steps
    return t.ravel(), np.tile(wi / 2, n_steps) / n_steps


def path_length(
    decode,
    Z,
    cells,
    x_from,
    x_to,
    *,
    n_steps=64,
    n_points=1,
    weight=None,
    batch_size=1024,
    device=None,
    dtype=torch.float32,
    channels_last=True,
    fuse=True,
) -> np.ndarray:
    """Decoded length (E,) float64 of straight latent segments, by quadrature of the speed.

    Segment e runs γ(s) = x_from[e] + s Δ, Δ = x_to[e] − x_from[e], s in [0, 1], placed at the
    position of cells[e] (flat id n*H*W + h*W + w) in image n of the grids Z, the image's other cells
    fixed. Its length ∫₀¹ sqrt(Δᵀ G(γ(s)) Δ) ds = ∫₀¹ ‖J(γ(s)) Δ‖ ds (J of the flattened output of
    decode with respect to that cell), or with weight ∫₀¹ sqrt(Σ weight(out) (J Δ)²) ds where
    weight maps the primal output `out` to per-pixel weights of the same shape (Fisher–Rao:
    geovq.riemann.pullback(model, "fisher") gives decode = decode_logits and that weight). Composite Gauss–Legendre with
    n_points nodes on each of n_steps subintervals (n_points = 1: midpoint rule; error
    O(n_steps^-2 n_points) for a smooth speed); J Δ by torch.func.jvp, batch_size (edge, node)
    evaluations per call; decode in eval mode without parameter grads, fuse and channels_last as in
    `image_distances`.
    """
    Z = _check_grid(Z)
    n, h, w = _split_cells(cells, Z)
    x_from, x_to = np.asarray(x_from, np.float64), np.asarray(x_to, np.float64)
    E, C = len(n), Z.shape[1]
    if x_from.shape != (E, C) or x_to.shape != (E, C):
        raise ValueError(f"shapes do not match: {E} cells, x_from {x_from.shape}, x_to {x_to.shape}")
    if n_steps < 1 or n_points < 1:
        raise ValueError(f"n_steps={n_steps} and n_points={n_points} must be >= 1")
    device = _resolve_device(decode, device)
    if fuse:
        decode = for_jvp(decode)
    t_nodes, t_weights = _quadrature(n_steps, n_points)
    Q = len(t_nodes)
    delta = x_to - x_from
    e_of, q_of = np.divmod(np.arange(E * Q), Q)
    speed = np.empty(E * Q, dtype=np.float64)
    with _evaluating(decode):
        for s in range(0, E * Q, batch_size):
            e, q = e_of[s : s + batch_size], q_of[s : s + batch_size]
            z = Z[torch.as_tensor(n[e], device=Z.device)].to(device=device, dtype=dtype)
            r = torch.arange(len(e), device=device)
            hh, ww = torch.as_tensor(h[e], device=device), torch.as_tensor(w[e], device=device)
            z[r, :, hh, ww] = torch.as_tensor(x_from[e] + t_nodes[q, None] * delta[e], device=device, dtype=dtype)
            tan = torch.zeros_like(z)
            tan[r, :, hh, ww] = torch.as_tensor(delta[e], device=device, dtype=dtype)
            out, jd = jvp(decode, (_layout(z, channels_last),), (_layout(tan, channels_last),))
            sq = jd.double() ** 2
            if weight is not None:
                sq = sq * weight(out).double()
            speed[s : s + len(e)] = torch.sqrt(sq.flatten(1).sum(dim=1)).cpu().numpy()
    return speed.reshape(E, Q) @ t_weights


def trapezoid_check(
    decode, Z, L, nodes, x, *, edges=None, n_edges=200, seed=0, n_steps=64, n_points=1, weight=None, **kwargs
) -> dict:
    """How well the stored edge lengths (a one-step trapezoid rule) approximate the path integral.

    The stored Riemannian length of edge i-j is ½(‖J_i(x_i) Δ‖ + ‖J_j(x_j) Δ‖), Δ = x_j − x_i, J_i
    the Jacobian with respect to node i's cell in node i's own image (geovq.riemann). It is compared
    with the same average of two path integrals, each in its endpoint's own context:
        integral_ij = ½(P_i + P_j),  P_i = ∫₀¹ ‖J_i(x_i + s Δ) Δ‖ ds  (image of node i, its other cells
        fixed; the segment starts at the cell's own value),  P_j likewise from x_j to x_i in image of j,
    by `path_length` (n_steps, n_points, weight and **kwargs passed on). Only the integration rule
    differs: on a 1x1 grid P_i = P_j and stored = trapezoid of the same integral; on a spatial grid
    each half is the trapezoid's endpoint term integrated along the segment in that endpoint's image.

    Parameters
    ----------
    L : (N, N) sparse symmetric stored lengths; nodes (N,) the nodes' flat cell ids in Z; x (N, C)
        the nodes' vectors (= the cells of Z at `nodes`, checked on the sampled edges).
    edges : (E, 2) node pairs that are edges of L, optional; default n_edges seeded edges (each
        undirected edge at most once) among those with x_i ≠ x_j.

    Returns
    -------
    dict with edges (E, 2), stored (E,) L_ij, integral_i (E,) P_i, integral_j (E,) P_j, integral (E,),
    rel_err (E,) = (stored − integral) / integral, and summary: `summary` of rel_err plus
    mean_abs = mean |rel_err|.
    """
    Z = _check_grid(Z)
    x = np.asarray(x)
    L = _check_lengths(L, x)
    nodes = np.asarray(nodes)
    if nodes.shape != (L.shape[0],):
        raise ValueError(f"nodes: expected ({L.shape[0]},) flat cell ids, got shape {nodes.shape}")
    if edges is None:
        up = sp.triu(L, k=1).tocoo()
        ok = np.flatnonzero((x[up.row] != x[up.col]).any(axis=1))
        pick = np.sort(np.random.default_rng(seed).choice(ok, size=min(n_edges, ok.size), replace=False))
        edges = np.stack([up.row[pick], up.col[pick]], axis=1)
    edges = np.asarray(edges, dtype=np.int64)
    i, j = edges[:, 0], edges[:, 1]
    stored = np.asarray(L[i, j]).ravel()
    if (stored == 0).any():
        raise ValueError("edges: some pairs are not edges of L")
    n_, h_, w_ = _split_cells(nodes[np.r_[i, j]], Z, "nodes")
    own = Z.permute(0, 2, 3, 1)[tuple(torch.as_tensor(a, device=Z.device) for a in (n_, h_, w_))]
    own = own.double().cpu().numpy()
    if not np.allclose(own, x[np.r_[i, j]], rtol=1e-5, atol=1e-6):
        raise ValueError("x: node vectors differ from the cells of Z at `nodes`")
    opts = dict(n_steps=n_steps, n_points=n_points, weight=weight, **kwargs)
    P_i = path_length(decode, Z, nodes[i], x[i], x[j], **opts)
    P_j = path_length(decode, Z, nodes[j], x[j], x[i], **opts)
    integral = 0.5 * (P_i + P_j)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (stored - integral) / integral
    row = summary(rel)
    row["mean_abs"] = float(np.mean(np.abs(rel[np.isfinite(rel)]))) if row["n"] else np.nan
    return {
        "edges": edges,
        "stored": stored,
        "integral_i": P_i,
        "integral_j": P_j,
        "integral": integral,
        "rel_err": rel,
        "summary": row,
    }
