"""Tests of geovq.voronoi and geovq.kmedoids against independent oracles (networkx shortest paths, dense matrices, FasterPAM)."""

import kmedoids
import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from conftest import to_nx

from geovq.graph import bridge_components, knn_graph
from geovq.kmedoids import GeodesicKMedoids, _SwapSearch, medoid_update
from geovq.voronoi import _voronoi, assign_new, second_nearest, voronoi


def random_graph(n, seed, avg_degree=6, zero_frac=0.0):
    """Connected symmetric CSR with random positive lengths: a random spanning tree plus random edges."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    a = [perm[i] for i in range(1, n)]
    b = [perm[rng.integers(i)] for i in range(1, n)]  # tree: attach each node to an earlier one
    m = n * avg_degree // 2
    a = np.concatenate([a, rng.integers(n, size=m)])
    b = np.concatenate([b, rng.integers(n, size=m)])
    keep = a != b
    a, b = a[keep], b[keep]
    w = rng.uniform(0.05, 1.0, size=a.size)
    w[rng.random(a.size) < zero_frac] = 1e-12  # duplicate points: floored zero lengths
    G = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)).tocsr()
    G.sum_duplicates()
    G = G.minimum(G.T).tocsr()  # a pair drawn twice got summed lengths: keep it symmetric anyway
    return sp.csr_matrix(G)


def nx_medoid_distances(H, medoids):
    """(K, N) matrix of networkx shortest-path lengths from each medoid."""
    D = np.full((len(medoids), H.number_of_nodes()), np.inf)
    for r, m in enumerate(medoids):
        for v, d in nx.single_source_dijkstra_path_length(H, int(m)).items():
            D[r, v] = d
    return D


def check_voronoi(G, medoids):
    dist, label = voronoi(G, medoids)
    H = to_nx(G)
    ref = nx.multi_source_dijkstra_path_length(H, set(medoids.tolist()))
    ref = np.array([ref[v] for v in range(G.shape[0])])
    np.testing.assert_array_equal(dist, ref)  # same sums along the same paths: exact
    D = nx_medoid_distances(H, medoids)
    np.testing.assert_array_equal(D.min(axis=0), dist)
    srt = np.sort(D, axis=0)
    unique = srt[1] - srt[0] > 1e-9 * np.maximum(srt[0], 1)
    np.testing.assert_array_equal(label[unique], D.argmin(axis=0)[unique])
    # ties: the chosen medoid attains the minimum
    np.testing.assert_array_equal(D[label, np.arange(G.shape[0])], dist)
    assert label.dtype == np.int64 and dist.dtype == np.float64
    return dist, label, unique.mean()


@pytest.mark.parametrize("n,k,seed", [(30, 3, 0), (300, 10, 1), (2000, 40, 2)])
def test_voronoi_matches_networkx(n, k, seed):
    G = random_graph(n, seed)
    medoids = np.random.default_rng(seed).choice(n, k, replace=False)
    check_voronoi(G, medoids)


def test_voronoi_with_duplicate_points_and_zero_lengths():
    G = random_graph(400, 3, zero_frac=0.2)
    medoids = np.random.default_rng(3).choice(400, 12, replace=False)
    check_voronoi(G, medoids)
    # a kNN graph on points with exact duplicates
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    x[100:130] = x[0]
    G, _ = knn_graph(x, 5)
    G, _ = bridge_components(G, x)
    check_voronoi(G, np.array([0, 5, 200, 250, 299]))


def test_voronoi_integer_ties():
    # unit lengths on a grid: many ties, checked through the chosen medoid's distance
    G = nx.to_scipy_sparse_array(nx.grid_2d_graph(15, 15), format="csr").astype(np.float64)
    _, _, frac_unique = check_voronoi(sp.csr_matrix(G), np.array([0, 14, 112, 210, 224]))
    assert frac_unique < 1


def test_voronoi_unreachable_raises():
    G = sp.block_diag([random_graph(20, 0), random_graph(10, 1)]).tocsr()
    with pytest.raises(ValueError, match="unreachable"):
        voronoi(G, np.array([0, 5]))
    with pytest.raises(ValueError, match="medoids: node ids must be distinct"):
        voronoi(G, np.array([0, 0]))


def test_second_nearest_matches_networkx():
    G = random_graph(500, 5, zero_frac=0.05)
    medoids = np.random.default_rng(5).choice(500, 15, replace=False)
    dist, label = voronoi(G, medoids)
    d2 = second_nearest(G, dist, label)
    D = np.sort(nx_medoid_distances(to_nx(G), medoids), axis=0)
    np.testing.assert_allclose(d2, D[1], rtol=1e-12, atol=1e-12)


def brute_medoid(H, members):
    sub = H.subgraph(members.tolist())
    lengths = dict(nx.all_pairs_dijkstra_path_length(sub))
    sums = np.array([sum(lengths[m][v] for v in members.tolist()) for m in members.tolist()])
    return sums, dict(zip(members.tolist(), sums))


def test_medoid_update_matches_bruteforce_on_voronoi_cells():
    G = random_graph(600, 6)
    H = to_nx(G)
    medoids = np.random.default_rng(6).choice(600, 12, replace=False)
    _, label = voronoi(G, medoids)
    for j in range(12):
        members = np.flatnonzero(label == j)
        best = medoid_update(G, members, current=medoids[j])
        sums, by_node = brute_medoid(H, members)
        assert by_node[best] == pytest.approx(sums.min(), rel=1e-12)
        assert best in members


def test_medoid_update_arbitrary_connected_sets():
    G = random_graph(300, 7, zero_frac=0.1)
    H = to_nx(G)
    for src in [0, 17, 123]:
        ball = nx.single_source_dijkstra_path_length(H, src, cutoff=0.6)
        members = np.array(sorted(ball))
        best = medoid_update(G, members)
        sums, by_node = brute_medoid(H, members)
        assert by_node[best] == pytest.approx(sums.min(), rel=1e-12)


def test_medoid_update_sampled_for_big_cells():
    x = np.random.default_rng(8).normal(size=(1500, 3)).astype(np.float32)
    G, _ = knn_graph(x, 8)
    members = np.arange(1500)
    exact = medoid_update(G, members)
    approx = medoid_update(G, members, exact_max=100, current=5, seed=1)
    sums = dijkstra(G, indices=[exact, approx, 5]).sum(axis=1)
    print(f"sampled medoid: sum {sums[1]:.2f} vs exact {sums[0]:.2f} (current {sums[2]:.2f})")
    assert sums[0] <= sums[1] + 1e-9
    assert sums[1] <= sums[2] + 1e-9  # never worse than the current medoid
    assert sums[1] <= 1.01 * sums[0]  # and close to the exact one on a smooth cloud


def test_medoid_update_disconnected_members_raise():
    G = random_graph(100, 9)
    H = to_nx(G)
    far = max(nx.single_source_dijkstra_path_length(H, 0).items(), key=lambda t: t[1])[0]
    assert G[0, far] == 0  # the farthest node is not a neighbour: {0, far} is disconnected
    with pytest.raises(ValueError, match="members: they do not induce a connected subgraph"):
        medoid_update(G, np.array([0, far]))


def geodesic_problem(n, seed):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(8, 6))
    x = (means[rng.integers(8, size=n)] + rng.normal(size=(n, 6))).astype(np.float32)
    G, _ = knn_graph(x, 10)
    G, _ = bridge_components(G, x)
    return G, x


@pytest.mark.parametrize("n,k", [(600, 12), (1000, 30)])
def test_kmedoids_within_2pct_of_fasterpam(n, k):
    G, x = geodesic_problem(n, seed=n)
    D = dijkstra(G, directed=True)  # dense oracle, for the test only
    pam = kmedoids.fasterpam(D, k, random_state=0, max_iter=100)
    results = {}
    for init in ["kmeans", "random", "kmeans++"]:
        for swap in [False, True]:
            m = GeodesicKMedoids(k, init=init, swap=swap, seed=0).fit(G, x)
            obj = np.array(m.objective_)
            assert (np.diff(obj) <= 0).all()  # non-increasing trace
            # the reported state is exact: dist_ and labels_ from the dense matrix
            assert m.medoids_.dtype == np.int64 and len(set(m.medoids_.tolist())) == k
            np.testing.assert_allclose(m.dist_, D[m.medoids_].min(axis=0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(D[m.medoids_[m.labels_], np.arange(n)], m.dist_, rtol=1e-12)
            assert obj[-1] == pytest.approx(D[m.medoids_].min(axis=0).sum(), rel=1e-12)
            np.testing.assert_array_equal(m.cluster_centers_, x[m.medoids_])
            assert m.n_iter_ == len(obj) - 1
            results[init, swap] = obj[-1]
    gaps = {key: 100 * (v / pam.loss - 1) for key, v in results.items()}
    print(
        f"\nN={n} K={k} FasterPAM {pam.loss:.2f}; gaps % (init, swap): "
        + ", ".join(f"{a}/{b}: {g:+.2f}" for (a, b), g in gaps.items())
    )
    for init in ["kmeans", "random", "kmeans++"]:
        assert results[init, True] <= 1.02 * pam.loss


def test_kmeans_init_beats_random_init():
    G, x = geodesic_problem(1000, seed=1000)
    obj = {
        init: [GeodesicKMedoids(30, init=init, swap=False, seed=s).fit(G, x).objective_ for s in range(5)]
        for init in ["kmeans", "random"]
    }
    for init, runs in obj.items():
        print(
            f"\ninit={init}: initial {np.mean([o[0] for o in runs]):.1f}, "
            f"after Voronoi iteration {np.mean([o[-1] for o in runs]):.1f} (mean of 5 seeds)"
        )
    assert all(a[0] < b[0] for a, b in zip(obj["kmeans"], obj["random"]))
    assert np.mean([o[-1] for o in obj["kmeans"]]) < np.mean([o[-1] for o in obj["random"]])


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_swap_round_guarantee(init):
    """Every strict batch of swaps lowers the objective by at least its estimate, to convergence."""
    G, x = geodesic_problem(1000, seed=11)
    m = GeodesicKMedoids(30, init=init, swap=False, seed=3).fit(G, x)
    medoids, dist, label = m.medoids_, m.dist_, m.labels_
    search = _SwapSearch(G, 30, 4, np.random.default_rng(0))
    checked = 0
    while (found := search.round(medoids, dist, label)) is not None:
        (strict, est), *_ = found
        new_dist, new_label = _voronoi(G, strict)
        assert est < 0
        assert new_dist.sum() - dist.sum() <= est + 1e-9 * dist.sum()
        checked += 1
        medoids, dist, label = strict, new_dist, new_label
    assert checked >= 5 and search.wide  # ran through both region sizes


def test_assign_new_matches_bruteforce():
    G = random_graph(400, 12)
    rng = np.random.default_rng(12)
    medoids = rng.choice(400, 9, replace=False)
    dist, label = voronoi(G, medoids)
    m, k = 150, 5
    nbr_idx = np.stack([rng.choice(400, k, replace=False) for _ in range(m)])
    nbr_len = rng.uniform(0.01, 2.0, size=(m, k))
    nbr_len[0, 0] = 0.0
    nbr_idx[1, 2] = -1  # a missing link is ignored
    codes, d = assign_new(nbr_idx, nbr_len, dist, label)
    # oracle: add each new vector as a node linked to its k nodes, Dijkstra from every
    # medoid; links point only into the new nodes, so that no path between graph nodes
    # runs through another new vector (as if each were added alone)
    rows, cols, vals = [], [], []
    for i in range(m):
        for j in range(k):
            if nbr_idx[i, j] >= 0:
                rows.append(nbr_idx[i, j])
                cols.append(400 + i)
                vals.append(max(nbr_len[i, j], 1e-300))
    E = sp.csr_matrix((vals, (rows, cols)), shape=(400 + m, 400 + m))
    A = sp.bmat([[G, None], [None, sp.csr_matrix((m, m))]]).tocsr() + E
    D = dijkstra(A, directed=True, indices=medoids)[:, 400:]
    np.testing.assert_allclose(d, D.min(axis=0), rtol=1e-12, atol=1e-250)
    srt = np.sort(D, axis=0)
    unique = srt[1] - srt[0] > 1e-9
    np.testing.assert_array_equal(codes[unique], D.argmin(axis=0)[unique])
    np.testing.assert_allclose(D[codes, np.arange(m)], d, rtol=1e-12)
    assert codes.dtype == np.int64


def test_bad_inputs_are_one_line_value_errors():
    G, x = geodesic_problem(50, seed=13)
    with pytest.raises(ValueError, match=r"^n_clusters=51 must be an integer in \[1, number of nodes N=50\]$"):
        GeodesicKMedoids(51).fit(G, x)
    with pytest.raises(ValueError, match=r"^x: expected shape \(N=50, C\)"):
        GeodesicKMedoids(5).fit(G, x[:10])
    with pytest.raises(ValueError, match="init="):
        GeodesicKMedoids(5, init="pam").fit(G, x)
    bad = G.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match=r"^G: edge lengths"):
        voronoi(bad, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^medoids: node ids must be in \[0, 50\)"):
        voronoi(G, np.array([0, 50]))
    with pytest.raises(ValueError, match="nbr_idx"):
        assign_new(np.zeros((3, 2), int), np.zeros((3, 3)), np.zeros(5), np.zeros(5, int))


def test_second_nearest_labels_match_networkx():
    G = random_graph(400, 14)
    medoids = np.random.default_rng(14).choice(400, 10, replace=False)
    dist, label = voronoi(G, medoids)
    d2, l2 = second_nearest(G, dist, label, return_label=True)
    D = nx_medoid_distances(to_nx(G), medoids)
    srt = np.sort(D, axis=0)
    np.testing.assert_allclose(d2, srt[1], rtol=1e-12)
    assert (l2 != label).all()
    np.testing.assert_allclose(D[l2, np.arange(400)], d2, rtol=1e-12)  # l2 attains d2


@pytest.mark.parametrize("method", ["exact", "kdtree", "hnsw"])
def test_new_cells_are_linked_with_the_configured_knn_method(method, monkeypatch):
    """link_new_cells finds a new cell's nodes with config graph.knn_method / exact_max (as the
    graph itself), and every method gives the exact k nearest nodes here (Euclidean links)."""
    import geovq.graph
    from geovq.linking import link_new_cells

    rng = np.random.default_rng(4)
    x_nodes = rng.normal(size=(3000, 3)).astype(np.float32)
    mu = rng.normal(size=(40, 3, 2, 2)).astype(np.float32)  # 160 new cells
    new_ids = np.arange(160)
    seen = []
    real = geovq.graph.knn_query

    def spy(*args, **kw):
        out = real(*args, **kw)
        seen.append(out[2]["method"])
        return out

    monkeypatch.setattr(geovq.graph, "knn_query", spy)
    nbr, lengths = link_new_cells(new_ids, mu, x_nodes, 6, seed=0, knn_method=method, exact_max=100)
    assert seen == [method]
    x_new = mu.transpose(0, 2, 3, 1).reshape(-1, 3)
    ref = np.sort(np.linalg.norm(x_new[:, None] - x_nodes[None], axis=2), axis=1)[:, :6]
    np.testing.assert_allclose(lengths, np.linalg.norm(x_nodes[nbr] - x_new[:, None], axis=2), rtol=1e-5)
    found = np.mean(lengths <= ref[:, -1:] * (1 + 1e-5))  # within each cell's exact k-th distance
    assert found == 1.0 if method != "hnsw" else found >= 0.98
    if method != "hnsw":
        np.testing.assert_allclose(lengths, ref, rtol=1e-5)
