"""k-nearest-neighbour graphs over latent cells: kNN search, symmetric CSR graphs, bridging of components."""

from __future__ import annotations

import time

import faiss
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

# Edge lengths are stored as max(length, LENGTH_FLOOR * scale), scale = median positive
# kNN distance: scipy.sparse.csgraph drops or keeps explicitly stored zeros depending on
# the routine, so a duplicate point (distance 0) would silently lose its edge.
LENGTH_FLOOR = 1e-12

# HNSW efSearch values tried in turn until the measured recall reaches MIN_RECALL.
HNSW_EF_SEARCH = (32, 64, 128, 256, 512)
MIN_RECALL = 0.98
# method "auto" above exact_max: an exact KD-tree up to this many dimensions, HNSW above (a
# KD-tree's search degrades towards brute force as the dimension grows)
KDTREE_MAX_DIM = 16
METHODS = ("auto", "exact", "kdtree", "hnsw")


def check_latents(x, name="x"):
    """Return `x` as a C-contiguous float32 (N, C) array; ValueError naming `name` otherwise."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N, C), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf (or overflow float32)")
    return x


def _check_k(k, n):
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ValueError(f"k={k!r} must be a positive integer")
    if k >= n:
        raise ValueError(f"k={k} must be < number of nodes N={n}")


def _exact_lengths(base, queries, idx, chunk=1 << 16):
    """Euclidean lengths |queries[i] - base[idx[i, j]]| from coordinate differences.

    faiss returns |a|^2 + |b|^2 - 2ab, which cancels catastrophically for close pairs
    (duplicates come out as ~1e-6 instead of 0); recomputing keeps lengths symmetric.
    """
    out = np.empty(idx.shape, dtype=np.float32)
    for s in range(0, idx.shape[0], chunk):
        diff = base[idx[s : s + chunk]] - queries[s : s + chunk, None, :]
        out[s : s + chunk] = np.sqrt(np.einsum("ijc,ijc->ij", diff, diff, dtype=np.float64))
    return out


def _sort_rows(idx, dist):
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)


def _drop_self(idx, rows):
    """Remove each row's own id from a (n, k+1) result; if absent (ties among duplicates), drop the last."""
    mask = idx == rows[:, None]
    mask[~mask.any(axis=1), -1] = True
    return idx[~mask].reshape(idx.shape[0], idx.shape[1] - 1)


def _search(index, queries, k, rows):
    """k neighbours from `index`; `rows` are the queries' own ids in the base (None: not in it)."""
    _, idx = index.search(queries, k + (rows is not None))
    idx = idx.astype(np.int64, copy=False)
    if rows is not None:
        idx = _drop_self(idx, rows)
    return idx


class _Distinct:
    """A nearest-neighbour index over the *distinct* rows of `base`, answering in row ids of `base`.

    Latent cells repeat exactly (every blank image corner encodes to the same vector: tens of
    thousands of copies in Fashion-MNIST), and an HNSW graph built over large groups of identical
    points is badly connected: some queries then miss most of their true neighbours whatever
    efSearch is. Searched over distinct vectors and expanded back to copies, every row gets its
    copies first (distance 0), then the copies of the next distinct vectors, nearest first.
    Subclasses give `_nearest(queries, m)`: the m nearest distinct vectors' ids (-1: none found).
    """

    def __init__(self, base):
        distinct, inverse, count = np.unique(base, axis=0, return_inverse=True, return_counts=True)
        self.distinct = distinct
        self.inverse = inverse.ravel()  # row id -> its distinct vector
        self.order = np.argsort(self.inverse, kind="stable")  # row ids grouped by distinct vector
        self.start = np.concatenate([[0], np.cumsum(count)[:-1]])
        self.count = count

    def search(self, queries, k, rows):
        """Like `_search`: (n, k) row ids, -1 where fewer than k were found."""
        need = k + (rows is not None)
        near = self._near_rows(queries, min(need, len(self.count)), rows)
        out = np.full((len(queries), need), -1, np.int64)
        fill = np.zeros(len(queries), np.int64)
        for j in range(near.shape[1]):  # the j-th nearest distinct vector: as many copies as still fit
            d = near[:, j]
            found = d >= 0
            d = np.where(found, d, 0)
            take = np.where(found, np.minimum(self.count[d], need - fill), 0)
            first = self.start[d]
            for t in range(int(take.max(initial=0))):
                sel = np.flatnonzero(take > t)
                out[sel, fill[sel] + t] = self.order[first[sel] + t]
            fill += take
            if (fill == need).all():
                break
        return out if rows is None else _drop_self(out, rows)

    def _near_rows(self, queries, m, rows):
        """The m nearest distinct vectors of each query; ``rows``: the queries are these base rows."""
        return self._nearest(queries, m)


class _DistinctHNSW(_Distinct):
    """faiss HNSW (approximate) over the distinct rows (see _Distinct)."""

    # M = 16 links per node: on the 882 975 distinct Fashion-MNIST spatial cells it built in 23 s
    # against 41 s for M = 32 and searched all of them in 17 s against 26 s, at recall 0.9999
    # against 1.0000 with efSearch 32 (benchmarks/README.md, bench_fullscale.py)
    def __init__(self, base, m=16):
        super().__init__(base)
        self.index = faiss.IndexHNSWFlat(base.shape[1], m)
        self.index.add(self.distinct)
        self.hnsw = self.index.hnsw

    def _nearest(self, queries, m):
        return self.index.search(queries, m)[1]


class _DistinctKDTree(_Distinct):
    """scipy.spatial.cKDTree (exact) over the distinct rows (see _Distinct), queried on faiss's
    thread count (the job's threads). Exact, and on low-dimensional cells (C <= KDTREE_MAX_DIM)
    faster than HNSW: no recall to measure and no approximation in the graph."""

    def __init__(self, base):
        from scipy.spatial import cKDTree

        super().__init__(base)
        self.tree = cKDTree(self.distinct)

    def _near_rows(self, queries, m, rows):
        """Base rows (``queries`` = base[rows]) are answered through their distinct vectors, each
        queried once (copies share their answer); new queries are queried themselves."""
        if rows is None:
            return self._nearest(queries, m)
        if not np.array_equal(queries, self.distinct[self.inverse[rows]]):
            raise ValueError("_near_rows: queries are not the base's rows `rows`")
        return self._nearest(self.distinct, m)[self.inverse[rows]]

    def _nearest(self, queries, m):
        """Queried in a KD-tree's order of the queries (the tree's own for its vectors): nearby
        queries one after the other walk the same nodes, about 3x faster than in lexicographic or
        random order on 883 000 8-D cells; each query's answer is its own whatever the order."""
        from scipy.spatial import cKDTree

        order = self.tree.indices if queries is self.distinct else cKDTree(queries).indices
        _, near = self.tree.query(queries[order], k=m, workers=max(1, faiss.omp_get_max_threads()))
        out = np.empty((len(queries), m), np.int64)
        out[order] = np.asarray(near, np.int64).reshape(len(queries), m)
        return np.where(out < len(self.count), out, -1)  # cKDTree's "missing" is n


def _recall(base, queries, got, exact):
    """Fraction of returned neighbours `got` within the exact k-th distance of `exact`.

    Distance-based rather than id-based so that ties among duplicates do not count as misses.
    """
    kth = _exact_lengths(base, queries, exact).max(axis=1)
    valid = got >= 0
    got_len = _exact_lengths(base, queries, np.where(valid, got, 0))
    # relative slack: the k-th exact length itself and the returned ones are recomputed
    # identically, so only float32 rounding separates equal lengths
    hit = valid & (got_len <= kth[:, None] * (1 + 1e-6) + 1e-30)
    return float(hit.mean())


def _knn(base, queries, k, rows, method, exact_max, seed, n_sample=1000):
    n, c = base.shape
    if method == "auto":
        method = "exact" if n <= exact_max else "kdtree" if c <= KDTREE_MAX_DIM else "hnsw"
    if method not in METHODS[1:]:
        raise ValueError(f"method={method!r} must be one of {', '.join(map(repr, METHODS))}")
    t0 = time.perf_counter()
    info = {"method": method, "k": int(k), "n_base": int(n), "n_queries": int(queries.shape[0])}
    if method == "kdtree":
        idx = _DistinctKDTree(base).search(queries, k, rows)
        info["recall"] = 1.0
    elif method == "exact":
        flat = faiss.IndexFlatL2(c)
        flat.add(base)
        idx = _search(flat, queries, k, rows)
        info["recall"] = 1.0
    else:
        flat = faiss.IndexFlatL2(c)
        flat.add(base)
        index = _DistinctHNSW(base)
        # choose efSearch on a seeded sample of queries against exact search, then search
        # all queries once: the recall reported is the sample's
        pick = np.sort(
            np.random.default_rng(seed).choice(queries.shape[0], size=min(n_sample, queries.shape[0]), replace=False)
        )
        sub_rows = None if rows is None else rows[pick]
        exact = _search(flat, queries[pick], k, sub_rows)
        for ef in HNSW_EF_SEARCH:
            index.hnsw.efSearch = max(ef, k + 1)
            recall = _recall(base, queries[pick], index.search(queries[pick], k, sub_rows), exact)
            if recall >= MIN_RECALL:
                break
        else:
            raise ValueError(
                f"hnsw recall={recall:.4f} < {MIN_RECALL} even at efSearch={index.hnsw.efSearch}; use method='exact'"
            )
        idx = index.search(queries, k, rows)
        # HNSW can return fewer than k results (-1) for a few rows: search those exactly
        short = np.flatnonzero((idx < 0).any(axis=1))
        if short.size:
            idx[short] = _search(flat, queries[short], k, None if rows is None else rows[short])
        info.update(recall=recall, ef_search=int(index.hnsw.efSearch), n_exact_rows=int(short.size))
    dist = _exact_lengths(base, queries, idx)
    idx, dist = _sort_rows(idx, dist)
    info["seconds"] = time.perf_counter() - t0
    return idx, dist, info


def knn(x, k, *, method="auto", exact_max=200_000, seed=0):
    """k nearest neighbours of every row of `x`, excluding the row itself.

    Returns idx (N, k) int64, dist (N, k) float32 Euclidean (not squared, recomputed
    from coordinate differences, rows sorted nearest first) and an info dict.
    method: "exact" (faiss IndexFlatL2), "kdtree" (exact too: scipy's cKDTree over the distinct
    rows, exact copies expanded back, see _Distinct), "hnsw" (approximate: faiss
    IndexHNSWFlat(C, 16) over the distinct rows; efSearch raised through HNSW_EF_SEARCH until the
    recall measured on 1000 seeded rows against exact search is >= 0.98, reported as
    info["recall"]; ValueError if it never is) or "auto" (exact when N <= exact_max, else kdtree
    when C <= KDTREE_MAX_DIM, else hnsw).
    """
    x = check_latents(x, "x")
    _check_k(k, x.shape[0])
    rows = np.arange(x.shape[0], dtype=np.int64)
    return _knn(x, x, k, rows, method, exact_max, seed)


def knn_query(base, queries, k, *, method="auto", exact_max=200_000, seed=0):
    """k nearest rows of `base` for each row of `queries` (new points, not part of `base`).

    Same returns and methods as `knn`.
    """
    base = check_latents(base, "base")
    queries = check_latents(queries, "queries")
    if queries.shape[1] != base.shape[1]:
        raise ValueError(f"queries: {queries.shape[1]} columns, base has {base.shape[1]}")
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= base.shape[0]):
        raise ValueError(f"k={k!r} must be <= number of base nodes N={base.shape[0]}")
    return _knn(base, queries, k, None, method, exact_max, seed)


def _floor(lengths):
    pos = lengths[lengths > 0]
    scale = float(np.median(pos)) if pos.size else 1.0
    return LENGTH_FLOOR * scale


def knn_graph(x, k, *, symmetrize="union", method="auto", exact_max=200_000, seed=0):
    """Symmetric kNN graph of the rows of `x` as an (N, N) float64 CSR of Euclidean edge lengths.

    symmetrize: "union" keeps i-j if either is among the other's k nearest, "mutual"
    only if both are. Zero diagonal (not stored). Lengths below a floor of
    LENGTH_FLOOR x (median kNN distance) are raised to it so that duplicate points stay
    connected. info: n_nodes, k, n_edges (undirected), n_components (before any
    bridging), recall, floor, method, seconds.
    """
    if symmetrize not in ("union", "mutual"):
        raise ValueError(f"symmetrize={symmetrize!r} must be 'union' or 'mutual'")
    x = check_latents(x, "x")
    n = x.shape[0]
    _check_k(k, n)
    t0 = time.perf_counter()
    idx, dist, info = knn(x, k, method=method, exact_max=exact_max, seed=seed)
    floor = _floor(dist)
    lengths = np.maximum(dist.astype(np.float64).ravel(), floor)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    A = sp.csr_matrix((lengths, (rows, idx.ravel().astype(np.int32))), shape=(n, n))
    del rows, lengths
    # every stored value is >= floor > 0, so maximum/minimum against the implicit zeros of
    # the transpose are exactly union/intersection of the edge sets
    G = A.maximum(A.T) if symmetrize == "union" else A.minimum(A.T)
    G = sp.csr_matrix(G)
    G.sort_indices()
    n_comp, _ = connected_components(G, directed=False)
    info.update(
        n_nodes=int(n),
        symmetrize=symmetrize,
        n_edges=int(G.nnz // 2),
        n_components=int(n_comp),
        floor=floor,
        seconds=time.perf_counter() - t0,
    )
    return G, info


def _argmin_over(qa, ba, ranges, block_rows=2048, block_cols=1024):
    """Row-wise argmin of qa @ ba[r].T over the rows r of `ba` in the given [lo, hi) ranges.

    With qa = [-2 q, 1] and ba = [b, |b|^2] the product is |q - b|^2 - |q|^2: one float32
    matmul with inner dimension C + 1 and a min pass, faster than a faiss flat search
    with k = 1 in low dimension, where the top-k bookkeeping dominates (benchmarks/README.md); blocks of
    2048 x 1024 scores (8 MB) stay in cache.
    Returns (index into ba, score).
    """
    best = np.full(qa.shape[0], np.inf, dtype=np.float32)
    arg = np.full(qa.shape[0], -1, dtype=np.int64)
    for r0 in range(0, qa.shape[0], block_rows):
        q = qa[r0 : r0 + block_rows]
        rows = slice(r0, r0 + q.shape[0])
        for lo, hi in ranges:
            for c0 in range(lo, hi, block_cols):
                c1 = min(c0 + block_cols, hi)
                s = q @ ba[c0:c1].T
                j = np.argmin(s, axis=1)
                v = s[np.arange(s.shape[0]), j]
                better = v < best[rows]
                best[rows] = np.where(better, v, best[rows])
                arg[rows] = np.where(better, j + c0, arg[rows])
    return arg, best


def _closest_pair(ba, qa_of, lo, hi, n, exact_pairs, n_starts, rng):
    """A closest pair (p in [lo, hi), q outside) of component-sorted points; positions in `ba`.

    Exact (all |c| x (N - |c|) pairs) when that is <= exact_pairs; otherwise a mutual
    nearest pair by alternating nearest-neighbour descent (p -> nearest outside q ->
    nearest p in the component -> ...) from n_starts seeded points, keeping the best.
    """
    outside = [(0, lo), (hi, n)]
    if (hi - lo) * (n - (hi - lo)) <= exact_pairs:
        p = np.arange(lo, hi)
        q, s = _argmin_over(qa_of(p), ba, outside)
    else:
        p = np.unique(rng.integers(lo, hi, size=n_starts))
        for _ in range(50):
            q, s = _argmin_over(qa_of(p), ba, outside)
            p_next, _ = _argmin_over(qa_of(q), ba, [(lo, hi)])
            if np.array_equal(p_next, p):
                break
            p = p_next
    # score + |p|^2 is the squared distance
    i = int(np.argmin(s + ba[p, -1]))
    return int(p[i]), int(q[i])


def bridge_components(G, x, *, exact_pairs=1e8, n_starts=8, seed=0):
    """Connect the components of symmetric graph G (N, N) built on the rows of x (N, C).

    Rule (Boruvka on components): while more than one component remains, every component
    except the largest adds one edge to the rest of the graph, its closest pair (p inside,
    q outside) by Euclidean distance. The pair is exact when |component| x (N -
    |component|) <= exact_pairs (a blocked matmul over those pairs, no N x N matrix);
    otherwise it is a mutual nearest pair found by alternating nearest-neighbour
    descent from n_starts seeded points (each step O(N C)). Bridge lengths are
    Euclidean, floored like knn_graph's. With distinct distances and exact pairs, the
    added edges form a spanning forest of the components: n_bridges = n_components - 1.
    Returns (G2 csr float64, n_bridges).
    """
    x = check_latents(x, "x")
    G = sp.csr_matrix(G, dtype=np.float64)
    n = G.shape[0]
    if G.shape != (n, n) or x.shape[0] != n:
        raise ValueError(f"G: shape {G.shape} does not match x with N={x.shape[0]} rows")
    rng = np.random.default_rng(seed)
    floor = _floor(G.data)
    sqnorm = np.einsum("ij,ij->i", x, x)
    new_edges = set()
    while True:
        n_comp, comp = connected_components(G, directed=False)
        if n_comp == 1:
            break
        order = np.argsort(comp, kind="stable")
        sizes = np.bincount(comp, minlength=n_comp)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        ba = np.hstack([x[order], sqnorm[order, None]])

        def qa_of(pos):
            return np.hstack([-2.0 * ba[pos, :-1], np.ones((pos.size, 1), np.float32)])

        pairs = set()
        for c in np.argsort(sizes)[:-1]:  # all but the largest
            p, q = _closest_pair(ba, qa_of, starts[c], starts[c + 1], n, exact_pairs, n_starts, rng)
            a, b = int(order[p]), int(order[q])
            pairs.add((min(a, b), max(a, b)))
        pairs -= new_edges
        new_edges |= pairs
        a = np.array([e[0] for e in pairs], dtype=np.int64)
        b = np.array([e[1] for e in pairs], dtype=np.int64)
        diff = x[a].astype(np.float64) - x[b]
        w = np.maximum(np.sqrt((diff * diff).sum(axis=1)), floor)
        B = sp.csr_matrix((np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n))
        G = sp.csr_matrix(G.maximum(B))
    G.sort_indices()
    return G, len(new_edges)
