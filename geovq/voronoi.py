"""Geodesic Voronoi cells on a weighted graph: the assignment to the nearest of given medoids, the
second-nearest medoid, the codes of new points linked to the graph, and the CSR helpers they share
with geovq.kmedoids."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra


def _check_graph(G):
    if not sp.issparse(G) or G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(
            f"G: expected a square scipy.sparse matrix, got {type(G).__name__} of shape {getattr(G, 'shape', None)}"
        )
    G = sp.csr_matrix(G, dtype=np.float64)
    if G.nnz and not (G.data >= 0).all():
        raise ValueError("G: edge lengths must be >= 0 and not NaN")
    return G


def _check_nodes(nodes, n, name):
    nodes = np.asarray(nodes)
    if nodes.ndim != 1 or nodes.size == 0 or not np.issubdtype(nodes.dtype, np.integer):
        raise ValueError(f"{name}: expected a non-empty 1-D array of node ids, got {nodes!r:.80}")
    nodes = nodes.astype(np.int64)
    if nodes.min() < 0 or nodes.max() >= n:
        raise ValueError(f"{name}: node ids must be in [0, {n}), got [{nodes.min()}, {nodes.max()}]")
    if np.unique(nodes).size != nodes.size:
        raise ValueError(f"{name}: node ids must be distinct")
    return nodes


def _voronoi(G, medoids):
    dist, _, src = dijkstra(G, directed=True, indices=medoids, min_only=True, return_predecessors=True)
    if (src < 0).any():
        raise ValueError(
            f"G: {int((src < 0).sum())} node(s) unreachable from every medoid; "
            "bridge components first (graph.bridge_components)"
        )
    pos = np.empty(G.shape[0], dtype=np.int64)
    pos[medoids] = np.arange(medoids.size)
    return dist, pos[src]


def voronoi(G, medoids):
    """Geodesic Voronoi cells of `medoids` on symmetric graph G (N, N) of edge lengths.

    One multi-source Dijkstra pass (directed=True: G is symmetric, and the directed code
    path is faster; benchmarks/README.md). Returns dist (N,) float64, the geodesic distance to the nearest
    medoid, and label (N,) int64, that medoid's position 0..K-1 in `medoids`. Labels
    follow the shortest-path tree, so every cell is connected and contains the path from
    its medoid to each member. ValueError if some node is unreachable.
    """
    G = _check_graph(G)
    medoids = _check_nodes(medoids, G.shape[0], "medoids")
    return _voronoi(G, medoids)


def _gather_rows(G, nodes):
    """(row position, column, value) of all stored entries in rows `nodes` of CSR G."""
    starts, ends = G.indptr[nodes], G.indptr[nodes + 1]
    offs = _ranges(starts, ends)
    return np.repeat(np.arange(nodes.size), ends - starts), G.indices[offs], G.data[offs]


def _induced(G, nodes, loc):
    """Subgraph of CSR G induced by `nodes`, in O(sum of their degrees).

    `loc` is a caller-owned int array of length N filled with -1 (restored on return):
    slicing G[nodes][:, nodes] costs O(N) per call, which dominates for small clusters
    of a large graph.
    """
    loc[nodes] = np.arange(nodes.size)
    r, c, v = _gather_rows(G, nodes)
    lc = loc[c]
    keep = lc >= 0
    loc[nodes] = -1
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r[keep], minlength=nodes.size))])
    return sp.csr_matrix((v[keep], lc[keep], indptr), shape=(nodes.size, nodes.size))


def second_nearest(G, dist, label, *, return_label=False):
    """Geodesic distance from each node to its second-nearest medoid, given `voronoi` output.

    The shortest path from any other medoid enters the node's cell for the last time
    through an edge (v, u) with v outside the cell, so the answer is one Dijkstra from a
    virtual source linked to each boundary node u by min_v dist[v] + G[v, u], over the
    edges inside cells only. Exact for cells that are shortest-path trees; inf where
    only one medoid is reachable. With return_label, also that medoid's position (-1
    where none), traced back through the predecessors to the entry edge.
    """
    n = G.shape[0]
    deg = np.diff(G.indptr)
    lab = label.astype(np.int32)
    inside = np.repeat(lab, deg) == lab[G.indices]
    # G is symmetric: the edges into u are row u's entries
    via = np.where(inside, np.inf, dist[G.indices] + G.data)
    entry = np.full(n, np.inf)
    nonempty = deg > 0
    starts = G.indptr[:-1][nonempty]
    entry[nonempty] = np.minimum.reduceat(via, starts)
    has = np.isfinite(entry)
    if return_label:
        # the first entry edge attaining each row's minimum
        at_min = np.isfinite(via) & (via == np.repeat(entry, deg))
        first = np.full(n, via.size)
        first[nonempty] = np.minimum.reduceat(np.where(at_min, np.arange(via.size), via.size), starts)
        entry_label = np.full(n, -1, dtype=np.int64)
        entry_label[has] = label[G.indices[first[has]]]
    del via
    indptr = np.concatenate([[0], np.cumsum(inside), [0]])[np.append(G.indptr, -1)]
    indptr[-1] = indptr[-2] + has.sum()
    H = sp.csr_matrix(
        (
            np.concatenate([G.data[inside], entry[has]]),
            np.concatenate([G.indices[inside], np.flatnonzero(has).astype(G.indices.dtype)]),
            indptr,
        ),
        shape=(n + 1, n + 1),
    )
    if not return_label:
        return dijkstra(H, directed=True, indices=n)[:n]
    d2, pred = dijkstra(H, directed=True, indices=n, return_predecessors=True)
    # pointer doubling up the shortest-path tree to each node's entry node
    pred = pred[:n].astype(np.int64)
    root = np.where((pred == n) | (pred < 0), np.arange(n), pred)
    while True:
        up = root[root]
        if np.array_equal(up, root):
            break
        root = up
    label2 = np.where(np.isfinite(d2[:n]), entry_label[root], -1)
    return d2[:n], label2


def assign_new(nbr_idx, nbr_len, node_dist, node_label):
    """Codes of new vectors linked to graph nodes: label of the medoid nearest through the links.

    nbr_idx (M, k) node ids and nbr_len (M, k) link lengths (Euclidean or Riemannian,
    computed by the caller); node_dist (N,), node_label (N,) from `voronoi`. Returns codes
    (M,) int64 = node_label[j*] and dist (M,) float64 = nbr_len[m, j*] + node_dist[j*],
    with j* the link minimising that sum. Entries with nbr_idx < 0 are ignored.
    """
    nbr_idx = np.asarray(nbr_idx)
    nbr_len = np.asarray(nbr_len, dtype=np.float64)
    node_dist = np.asarray(node_dist, dtype=np.float64)
    node_label = np.asarray(node_label)
    if nbr_idx.ndim != 2 or nbr_idx.shape != nbr_len.shape:
        raise ValueError(f"nbr_idx {nbr_idx.shape} and nbr_len {nbr_len.shape} must be equal (M, k)")
    if node_dist.shape != node_label.shape or node_dist.ndim != 1:
        raise ValueError(f"node_dist {node_dist.shape} and node_label {node_label.shape} must be equal (N,)")
    if nbr_idx.max(initial=-1) >= node_dist.size:
        raise ValueError(f"nbr_idx: node id {nbr_idx.max()} >= number of nodes N={node_dist.size}")
    if np.isnan(nbr_len).any() or (nbr_len < 0).any():
        raise ValueError("nbr_len: lengths must be >= 0 and not NaN")
    valid = nbr_idx >= 0
    safe = np.where(valid, nbr_idx, 0)
    total = np.where(valid, nbr_len + node_dist[safe], np.inf)
    j = np.argmin(total, axis=1)
    rows = np.arange(nbr_idx.shape[0])
    dist = total[rows, j]
    if not np.isfinite(dist).all():
        raise ValueError(f"nbr_idx: {int((~np.isfinite(dist)).sum())} new vector(s) have no valid link")
    return node_label[safe[rows, j]].astype(np.int64), dist


def _ranges(lo, hi):
    """Concatenation of arange(lo[i], hi[i]) over i, without a Python loop."""
    lens = hi - lo
    out = np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return out + np.arange(out.size)
