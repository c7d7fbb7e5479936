"""Geodesic K-medoids on a weighted kNN graph: medoid updates, local swaps, the alternation that fits them."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.sparse.csgraph import dijkstra

from geovq.codebook import init_kmeans_snapped
from geovq.voronoi import _check_graph, _check_nodes, _gather_rows, _induced, _voronoi, assign_new, second_nearest

# Rows x columns of one block of a Dijkstra distance matrix (float64): bounds the memory
# of medoid updates and swap evaluations to ~32 MB whatever the cluster sizes.
_BLOCK = 4_000_000

# In a worker process of _update_pool only: (G, the worker's own medoid_update scratch).
_WORKER = None


def _row_sums(H, sources):
    """Sum over all nodes of H of the distance from each source, in memory-bounded blocks."""
    step = max(1, _BLOCK // H.shape[0])
    out = np.empty(sources.size)
    for s in range(0, sources.size, step):
        D = dijkstra(H, directed=True, indices=sources[s : s + step])
        out[s : s + step] = D.sum(axis=1)
    return out


def medoid_update(G, members, *, current=None, exact_max=200, n_sample=32, n_candidates=8, seed=0, _loc=None):
    """The member minimising the sum of geodesic distances to the other members.

    Distances are shortest paths in the subgraph of G induced by `members` (not in all of
    G): for a Voronoi cell (see `geovq.voronoi.voronoi`) the path from the medoid to each member stays
    inside the cell, so the current cost is unchanged by the restriction, the chosen
    medoid can only lower it, and the cost is O(|members|^2) instead of O(|members| N).
    Up to `exact_max` members: exact, by Dijkstra from every member. Above: Dijkstra
    from `n_sample` seeded random members ranks all members by their summed distance
    to the sample (G is symmetric), and the `n_candidates` best plus `current` are
    compared by exact sums. `current`, if given and tied for best, is kept.
    ValueError if the members do not induce a connected subgraph.
    """
    G = _check_graph(G) if _loc is None else G
    members = _check_nodes(members, G.shape[0], "members")
    if members.size == 1:
        return int(members[0])
    loc = np.full(G.shape[0], -1, dtype=np.int64) if _loc is None else _loc
    H = _induced(G, members, loc)
    n = members.size
    cur = None
    if current is not None:
        hit = np.flatnonzero(members == current)
        if hit.size == 0:
            raise ValueError(f"current={current} is not one of the members")
        cur = int(hit[0])
    if n <= exact_max:
        cand = np.arange(n)
    else:
        rng = np.random.default_rng(seed)
        sample = rng.choice(n, size=min(n_sample, n), replace=False)
        est = np.zeros(n)
        step = max(1, _BLOCK // n)
        for s in range(0, sample.size, step):
            est += dijkstra(H, directed=True, indices=sample[s : s + step]).sum(axis=0)
        cand = np.argpartition(est, min(n_candidates, n) - 1)[:n_candidates]
        if cur is not None:
            cand = np.union1d(cand, [cur])
    sums = _row_sums(H, cand)
    if not np.isfinite(sums).all():
        raise ValueError("members: they do not induce a connected subgraph of G")
    best = int(cand[np.argmin(sums)])
    if cur is not None and cur in cand and sums[np.flatnonzero(cand == cur)[0]] <= sums.min():
        best = cur
    return int(members[best])


def _update_pool(G, n_jobs):
    """Worker processes for medoid updates of graph G, or None (the serial path) when n_jobs is 1.

    Processes, not threads: scipy's dijkstra holds the GIL for the whole search (measured with
    scipy 1.17: a Python loop in another thread stalls during the call, and 2 threads run N
    independent calls no faster than 1). Forked workers inherit G copy-on-write (the initializer's
    arguments are not pickled under fork); where fork is unavailable the updates run serially.
    """
    if n_jobs == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_update_worker, initargs=(G,))


def _update_worker(G):
    global _WORKER
    _WORKER = (G, np.full(G.shape[0], -1, dtype=np.int64))


def _update_task(task):
    members, current, exact_max, seed = task
    G, loc = _WORKER
    return medoid_update(G, members, current=current, exact_max=exact_max, seed=seed, _loc=loc)


def _cluster_order(label, k):
    """Nodes sorted by cluster and each cluster's [start, stop) in that order."""
    order = np.argsort(label, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(label, minlength=k))])
    return order, starts


def _cluster_adjacency(G, label, k):
    """CSR (indptr, indices) of the cluster graph: q adjacent to p if an edge joins their cells."""
    lab = label.astype(np.int32)
    a = np.repeat(lab, np.diff(G.indptr))
    b = lab[G.indices]
    # a K x K flag table instead of sorting the (many) cross edges
    flag = np.zeros(k * k, dtype=bool)
    cross = a != b
    flag[a[cross].astype(np.int64) * k + b[cross]] = True
    flag[np.arange(k) * (k + 1)] = False
    rows, cols = np.nonzero(flag.reshape(k, k))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=k))])
    return indptr, cols


def _init_kmeanspp(G, k, rng):
    """Geodesic D^2 sampling: one bounded Dijkstra per added medoid (K passes)."""
    n = G.shape[0]
    medoids = [int(rng.integers(n))]
    dist = dijkstra(G, directed=True, indices=medoids[0])
    if not np.isfinite(dist).all():
        raise ValueError("G: not connected; bridge components first (graph.bridge_components)")
    for _ in range(1, k):
        p = dist**2
        p[medoids] = 0.0
        if p.sum() > 0:
            m = int(rng.choice(n, p=p / p.sum()))
        else:  # every node sits on a medoid (duplicates): any other node
            m = int(rng.choice(np.setdiff1d(np.arange(n), medoids)))
        medoids.append(m)
        # nodes farther than max(dist) from m cannot get closer to it
        np.minimum(dist, dijkstra(G, directed=True, indices=m, limit=dist.max()), out=dist)
    return np.array(medoids, dtype=np.int64)


class GeodesicKMedoids:
    """K-medoids on a graph's geodesic distances: objective sum_i d_geo(i, medoid(i)).

    fit(G, x): init -> alternate {Voronoi assignment (one Dijkstra pass); medoid_update of
    every changed cell} until no medoid moves -> swap rounds (`swap=True`, see
    `_SwapSearch`) until no swap helps -> alternate again; at most `max_iter` alternations
    and `max_swap_rounds` swap rounds, and a phase also stops when an iteration lowers the
    objective by <= tol x objective. G: symmetric CSR (N, N) of positive edge lengths,
    connected. Memory O(nnz(G) + N); no N x N or K x N matrix.
    init: "kmeans" (faiss k-means on x, centroids snapped to distinct nearest nodes),
    "kmeans++" (geodesic D^2 sampling, K Dijkstra passes; tends to pick outliers),
    "random" (seeded), or an array of K node ids. swap_candidates: candidates evaluated
    per cell and round; swap_depth: per cell, how many (best by a one-hop bound) are
    tried before the cell counts as converged; exact_max: cells above this size get the
    sampled medoid update (see medoid_update). n_jobs: worker processes for the medoid updates
    of an alternation (1: serial, in this process); the fit does not depend on it.

    Attributes after fit: medoids_ (K,) node ids, labels_ (N,) positions 0..K-1, dist_ (N,)
    geodesic distance to the medoid, cluster_centers_ = x[medoids_], objective_ (the
    initial value, then one per alternation or swap round that moved medoids;
    non-increasing), n_iter_ = len(objective_) - 1, n_swaps_, timings_ (s per phase).
    """

    def __init__(
        self,
        n_clusters,
        *,
        init="kmeans",
        max_iter=20,
        tol=0.0,
        seed=0,
        swap=True,
        max_swap_rounds=100,
        swap_candidates=8,
        swap_depth=16,
        exact_max=200,
        n_jobs=1,
        verbose=False,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.swap = swap
        self.max_swap_rounds = max_swap_rounds
        self.swap_candidates = swap_candidates
        self.swap_depth = swap_depth
        self.exact_max = exact_max
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _log(self, msg):
        if self.verbose:
            print(f"[GeodesicKMedoids {time.perf_counter() - self._t_fit:7.1f} s] {msg}", flush=True)

    def _init_medoids(self, G, x, rng):
        k = self.n_clusters
        if isinstance(self.init, (np.ndarray, list, tuple)):
            return _check_nodes(self.init, G.shape[0], "init")
        if self.init == "kmeans":
            return init_kmeans_snapped(x, k, self.seed)
        if self.init == "kmeans++":
            return _init_kmeanspp(G, k, rng)
        if self.init == "random":
            return np.sort(rng.choice(G.shape[0], size=k, replace=False)).astype(np.int64)
        raise ValueError(f"init={self.init!r} must be 'kmeans', 'kmeans++', 'random' or node ids")

    def _medoid_updates(self, G, order, starts, medoids, todo, loc, pool):
        """medoid_update of each cell in `todo`, in that order; in pool's workers when given."""
        tasks = [(order[starts[j] : starts[j + 1]], medoids[j], self.exact_max, self.seed + j) for j in todo]
        if pool is None:
            return [medoid_update(G, m, current=c, exact_max=e, seed=s, _loc=loc) for m, c, e, s in tasks]
        # largest cells first (the cost grows with size) in a few chunks per worker; each result
        # back at its cell's place, so nothing depends on which worker ran what
        by_size = np.argsort([-t[0].size for t in tasks], kind="stable")
        chunk = max(1, len(tasks) // (8 * self.n_jobs))
        out = [None] * len(tasks)
        for i, m in zip(by_size, pool.map(_update_task, [tasks[i] for i in by_size], chunksize=chunk)):
            out[i] = m
        return out

    def _alternate(self, G, medoids, dist, label, loc, n_iter):
        """Medoid updates + reassignment until no medoid moves; returns the new state."""
        k = medoids.size
        dirty = np.ones(k, dtype=bool)
        pool = _update_pool(G, self.n_jobs)
        with pool or contextlib.nullcontext():
            while n_iter < self.max_iter:
                order, starts = _cluster_order(label, k)
                new = medoids.copy()
                todo = np.flatnonzero(dirty)
                new[todo] = self._medoid_updates(G, order, starts, medoids, todo, loc, pool)
                if np.array_equal(new, medoids):
                    break
                new_dist, new_label = _voronoi(G, new)
                obj = float(new_dist.sum())
                n_iter += 1
                if obj > self.objective_[-1]:  # only float noise can do this; keep the better state
                    break
                # a cell needs a new update only if its members or medoid changed
                changed = (new_label != label) | (new_dist != dist)
                dirty = np.zeros(k, dtype=bool)
                dirty[new_label[changed]] = True
                dirty[label[changed]] = True
                dirty[new != medoids] = True
                gain = self.objective_[-1] - obj
                medoids, dist, label = new, new_dist, new_label
                self.objective_.append(obj)
                self._log(f"alternate {n_iter}: objective {obj:.6g}")
                if gain <= self.tol * obj:
                    break
        return medoids, dist, label, n_iter

    def fit(self, G, x):
        G = _check_graph(G)
        n = G.shape[0]
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"x: expected shape (N={n}, C), got {x.shape}")
        k = self.n_clusters
        if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
            raise ValueError(f"n_clusters={k!r} must be an integer in [1, number of nodes N={n}]")
        if not (isinstance(self.n_jobs, (int, np.integer)) and self.n_jobs >= 1):
            raise ValueError(f"n_jobs={self.n_jobs!r} must be an integer >= 1")
        rng = np.random.default_rng(self.seed)
        t0 = self._t_fit = time.perf_counter()
        self.timings_ = {}
        medoids = self._init_medoids(G, np.ascontiguousarray(x, dtype=np.float32), rng)
        if medoids.size != k:
            raise ValueError(f"init: {medoids.size} medoids given, n_clusters={k}")
        self.timings_["init"] = time.perf_counter() - t0
        dist, label = _voronoi(G, medoids)
        self.objective_ = [float(dist.sum())]
        self._log(f"init {self.init}: objective {self.objective_[-1]:.6g}")
        loc = np.full(n, -1, dtype=np.int64)
        n_iter, n_rounds, self.n_swaps_ = 0, 0, 0
        t0 = time.perf_counter()
        medoids, dist, label, n_iter = self._alternate(G, medoids, dist, label, loc, n_iter)
        self.timings_["alternate"] = time.perf_counter() - t0
        if self.swap and k >= 2:
            t0 = time.perf_counter()
            search = _SwapSearch(G, k, self.swap_candidates, rng, depth=self.swap_depth)
            while n_rounds < self.max_swap_rounds:
                found = search.round(medoids, dist, label)
                n_rounds += 1
                if found is None:
                    break
                # the batches with more swaps have no guarantee: keep one only if it beats
                # the decrease guaranteed for the strict batch, else take the strict one
                (new, est), *bolder = found
                for cand, _ in bolder[::-1]:
                    if np.array_equal(cand, new):
                        continue
                    new_dist, new_label = _voronoi(G, cand)
                    obj = float(new_dist.sum())
                    if obj <= self.objective_[-1] + est:
                        new = cand
                        break
                else:
                    new_dist, new_label = _voronoi(G, new)
                    obj = float(new_dist.sum())
                if obj >= self.objective_[-1]:  # guaranteed not to happen bar float noise
                    break
                self.n_swaps_ += int((new != medoids).sum())
                medoids, dist, label = new, new_dist, new_label
                self.objective_.append(obj)
                self._log(f"swap round {n_rounds}: {self.n_swaps_} swaps, objective {obj:.6g}")
                if self.objective_[-2] - obj <= self.tol * obj:
                    break
            self.timings_["swap"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            medoids, dist, label, n_iter = self._alternate(G, medoids, dist, label, loc, n_iter)
            self.timings_["alternate"] += time.perf_counter() - t0
        self.medoids_ = medoids
        self.labels_ = label
        self.dist_ = dist
        self.cluster_centers_ = np.asarray(x)[medoids]
        self.n_iter_ = len(self.objective_) - 1
        return self

    def assign(self, nbr_idx, nbr_len):
        """Codes (M,) and geodesic distances (M,) of new vectors linked to graph nodes; see geovq.voronoi.assign_new."""
        return assign_new(nbr_idx, nbr_len, self.dist_, self.labels_)


class _SwapSearch:
    """Search for swaps (remove medoid m, add node c) that lower the objective.

    The change of objective of a swap is computed as in FasterPAM (Schubert & Rousseeuw
    2021) from nearest and second-nearest medoid distances, but only over c's region:
    its cell j and the band of nodes whose second-nearest medoid is j's (those c can
    take from neighbouring cells), with distances from c inside the region's subgraph
    and within c's second-medoid distance. All three restrictions can only
    under-estimate the decrease. The band keeps each node in two regions, so a round
    costs O(nnz(G)) to extract, not (number of neighbouring cells) x that; once no swap
    helps, the search goes on with wider regions (plus all direct neighbours of the
    cell), which see the swaps whose gain runs through the rest of neighbouring cells
    (the gap to FasterPAM this closes: benchmarks/README.md). m is a medoid of the
    region ("local") or the medoid cheapest to remove anywhere ("far").

    Each round evaluates the next `n_cand` non-medoid members of every cell whose region
    changed or is not yet fully evaluated, keeping per cell the best local and the best
    far swap seen since the region last changed, until some swap helps; so rounds get
    cheap as the search converges, and it ends when the first `depth` candidates of
    every cell have been evaluated without an improving swap (all candidates when cells
    are smaller than `depth`: a local optimum for these moves). Candidates come in order
    of a one-hop bound on their saving (their distance plus what direct neighbours would
    save), which about halves the rounds against a random order. `round` returns three greedy
    batches of swaps (see `_select_swaps`): the strict one, whose estimated decrease is
    guaranteed, and two with more swaps that the caller keeps only if they do better.
    """

    def __init__(self, G, k, n_cand, rng, depth=16):
        self.G, self.k, self.n_cand, self.rng, self.depth = G, k, n_cand, rng, depth
        self.loc = np.full(G.shape[0], -1, dtype=np.int64)
        self.prev = None
        self.n_evaluated = 0
        self.perm = [None] * k
        self.ptr = np.zeros(k, dtype=np.int64)
        # per cell, since its region last changed: candidates evaluated, the region's cells,
        # and per candidate the change without the removal term (shared + per-cell
        # corrections), which stays valid while the region does (removal costs do not)
        self.cands, self.cells, self.base = [None] * k, [None] * k, [None] * k
        self.region = [None] * k  # (nodes, cell offsets, cells, induced subgraph)
        self.wide = False
        self.mark = np.zeros(G.shape[0], dtype=bool)

    def _evaluate(self, j, members, band, label, medoid, dist, d2):
        """Evaluate cell j's next candidates; keeps its best local and far swaps."""
        cand = self.perm[j][self.ptr[j] : self.ptr[j] + self.n_cand]
        self.ptr[j] += cand.size
        cand = cand[members[cand] != medoid]
        if cand.size == 0:
            return
        self.n_evaluated += cand.size
        if self.region[j] is None:  # extracted once per region state, kept for later batches
            if self.wide:  # add the cell's direct neighbours
                _, nbrs, _ = _gather_rows(self.G, members)
                self.mark[members] = self.mark[band] = True
                extra = np.unique(nbrs[~self.mark[nbrs]])
                self.mark[members] = self.mark[band] = False
                band = np.concatenate([band, extra])
                band = band[np.argsort(label[band], kind="stable")]
            band_label = label[band]
            nodes = np.concatenate([members, band])
            cut = np.flatnonzero(np.diff(band_label)) + 1
            offset = (
                np.concatenate([[0], members.size + np.concatenate([[0], cut])])
                if band.size
                else np.zeros(1, dtype=np.int64)
            )
            cells = np.concatenate([[j], band_label[offset[1:] - members.size]]) if band.size else np.array([j])
            self.region[j] = (nodes, offset, cells, _induced(self.G, nodes, self.loc))
        nodes, offset, cells, H = self.region[j]
        d1r, d2r = dist[nodes], d2[nodes]
        # gains come only from nodes closer to c than to their second medoid, and those
        # lie within about c's own second-medoid distance: a tighter search radius that
        # can only under-estimate the decrease
        D = dijkstra(H, directed=True, indices=cand, limit=min(d2r.max(), d2r[cand].max()))
        closer = D < d1r
        shared = np.where(closer, D - d1r, 0.0).sum(axis=1)
        contrib = np.where(closer, d1r - d2r, np.where(D < d2r, D - d2r, 0.0))
        base = np.column_stack([shared, shared[:, None] + np.add.reduceat(contrib, offset, axis=1)])
        self.cells[j] = cells
        self.cands[j].append(members[cand])
        self.base[j].append(base)

    def _proposals(self, removal, eps):
        """Per cell, its best local and best far swap: [(delta, j, c, m or -1, cells)]."""
        cheapest = removal.min()
        props = []
        for j in range(self.k):
            if not self.cands[j]:
                continue
            cands, base, cells = np.concatenate(self.cands[j]), np.vstack(self.base[j]), self.cells[j]
            local = base[:, 1:] + removal[cells]
            i, q = np.unravel_index(np.argmin(local), local.shape)
            if local[i, q] < -eps:
                props.append((float(local[i, q]), j, int(cands[i]), int(cells[q]), cells))
            f = int(np.argmin(base[:, 0]))
            if base[f, 0] + cheapest < -eps:
                props.append((float(base[f, 0] + cheapest), j, int(cands[f]), -1, cells))
        return props

    def _reset(self, stale, order, starts, gain):
        for j in np.flatnonzero(stale):
            g = gain[order[starts[j] : starts[j + 1]]]
            self.perm[j] = np.lexsort((self.rng.random(g.size), -g))[: self.depth]
            self.ptr[j] = 0
            self.cands[j], self.base[j], self.region[j] = [], [], None

    def round(self, medoids, dist, label):
        """Three batches of swaps [(new medoids, estimated change)] * 3, or None if none helps."""
        G, k = self.G, self.k
        d2, label2 = second_nearest(G, dist, label, return_label=True)
        removal = np.bincount(label, weights=d2 - dist, minlength=k)
        adj_ptr, adj = _cluster_adjacency(G, label, k)
        # a region changed if one of its nodes, by nearest or second-nearest medoid, did
        if self.prev is None:
            stale = np.ones(k, dtype=bool)
        else:
            p_dist, p_d2, p_label, p_label2 = self.prev
            changed = (p_label != label) | (p_label2 != label2) | (p_dist != dist) | (p_d2 != d2)
            stale = np.zeros(k, dtype=bool)
            for lab in (label, label2, p_label, p_label2):
                stale[lab[changed & (lab >= 0)]] = True
            if self.wide:  # wide regions also hold the neighbouring cells' nodes next to j
                rows = np.repeat(np.arange(k), np.diff(adj_ptr))
                np.logical_or.at(stale, rows, stale.copy()[adj])
        self.prev = (dist, d2, label, label2)
        order, starts = _cluster_order(label, k)
        has2 = label2 >= 0
        band_order = np.flatnonzero(has2)[np.lexsort((label[has2], label2[has2]))]
        band_starts = np.concatenate([[0], np.cumsum(np.bincount(label2[has2], minlength=k))])
        sizes = np.minimum(np.diff(starts), self.depth)
        # candidates in order of a one-hop bound on what adding them saves: their own
        # distance plus what their direct neighbours would save (ties broken at random)
        gain = dist.copy()
        nonempty = np.diff(G.indptr) > 0
        gain[nonempty] += np.add.reduceat(np.maximum(dist[G.indices] - G.data, 0.0), G.indptr[:-1][nonempty])
        self._reset(stale, order, starts, gain)
        eps = 1e-12 * float(dist.sum())
        # evaluate further candidates until some swap helps or all have been evaluated
        while True:
            todo = np.flatnonzero(self.ptr < sizes)
            for j in todo:
                band = band_order[band_starts[j] : band_starts[j + 1]]
                self._evaluate(j, order[starts[j] : starts[j + 1]], band, label, medoids[j], dist, d2)
            props = self._proposals(removal, eps)
            if props:
                break
            if todo.size == 0:
                if self.wide:
                    break
                self.wide = True  # band regions exhausted: evaluate everything again, wider
                self._reset(np.ones(k, dtype=bool), order, starts, gain)
        if not props:
            return None
        props.sort(key=lambda p: p[0])
        args = (props, medoids, removal, adj_ptr, adj, eps)
        return [_select_swaps(*args, level=level) for level in (0, 1, 2)]


def _select_swaps(props, medoids, removal, adj_ptr, adj, eps, level):
    """Greedy choice of swaps, best first; returns (new medoids, summed estimated change).

    level 0 (strict): the cells each swap accounted for (c's region) or changed (m's
    cell) pairwise disjoint, and no removed medoid adjacent to another removed cell (its
    nodes' fallback): the estimated decreases add up to a guaranteed decrease. Levels 1
    and 2 accept more swaps per round without that guarantee (the caller checks them):
    each cell takes part in at most one swap as c's cell j or as m's cell, and at level
    1 no j lies in another swap's region either.
    """
    k = medoids.size
    aff = np.zeros(k, dtype=bool)  # cells an accepted swap accounted for or changed
    protect = np.zeros(k, dtype=bool)  # medoids an accepted swap relies on as fallback
    removed = np.zeros(k, dtype=bool)
    by_removal = np.argsort(removal, kind="stable")
    cheapest = removal[by_removal[0]]
    new = medoids.copy()
    total = 0.0
    for delta, j, c, m, region in props:
        cells = region if level == 0 else np.array([j])
        if aff[region if level < 2 else cells].any():
            continue
        if m < 0:  # far swap: the cheapest medoid still free to remove
            was = aff[region].copy()
            aff[region] = True  # temporarily, to skip the region's own medoids
            ok = ~aff[by_removal] & ~protect[by_removal]
            aff[region] = was
            for m in by_removal[ok]:
                if not removed[adj[adj_ptr[m] : adj_ptr[m + 1]]].any():
                    break
            else:
                continue
            delta = delta - cheapest + removal[m]
            if delta >= -eps:
                continue
        elif aff[m] or protect[m] or removed[adj[adj_ptr[m] : adj_ptr[m + 1]]].any():
            continue
        aff[cells] = True
        aff[m] = True
        protect[adj[adj_ptr[m] : adj_ptr[m + 1]]] = True
        removed[m] = True
        new[m] = c
        total += delta
    return new, total


def fit_medoids(G, x, K, medoids, seed, *, threads=1):
    """Geodesic K-medoids of the graph's nodes as every geodesic codebook is fitted (config section
    ``medoids``: init, max_iter, swap); rule ``rate_distortion`` fits its other Ks with it too.
    threads: the job's cores, for the medoid updates (GeodesicKMedoids' n_jobs; same fit for any)."""
    m = medoids
    km = GeodesicKMedoids(K, init=m["init"], max_iter=m["max_iter"], swap=m["swap"], seed=seed, n_jobs=threads)
    return km.fit(G, x)
