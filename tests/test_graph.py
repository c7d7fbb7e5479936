"""Tests of geovq.graph against independent oracles (sklearn brute-force kNN, networkx, scipy cdist)."""

import os

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from conftest import to_nx

from geovq.graph import bridge_components, check_latents, knn, knn_graph, knn_query


def mixture(n, c, n_comp, seed, spread=3.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=spread, size=(n_comp, c))
    comp = rng.integers(n_comp, size=n)
    return (means[comp] + rng.normal(size=(n, c)) * rng.uniform(0.3, 1.5, n_comp)[comp, None]).astype(np.float32)


def sk_knn(base, queries, k, exclude_self):
    nn = NearestNeighbors(n_neighbors=k + exclude_self, algorithm="brute").fit(base)
    d, i = nn.kneighbors(queries)
    return (i[:, 1:], d[:, 1:]) if exclude_self else (i, d)


def test_knn_exact_matches_sklearn():
    x = mixture(2000, 8, 5, seed=1)
    idx, dist, info = knn(x, 10, method="exact")
    ref_i, ref_d = sk_knn(x, x, 10, exclude_self=True)
    assert idx.shape == (2000, 10) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert info["method"] == "exact" and info["recall"] == 1.0
    np.testing.assert_allclose(dist, ref_d, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(idx, ref_i)  # continuous data: no ties
    assert not (idx == np.arange(2000)[:, None]).any()


def test_knn_query_matches_sklearn():
    x = mixture(3000, 6, 4, seed=2)
    base, queries = x[:2500], x[2500:]
    idx, dist, _ = knn_query(base, queries, 7, method="exact")
    ref_i, ref_d = sk_knn(base, queries, 7, exclude_self=False)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-5, atol=1e-6)


def test_knn_self_excluded_with_many_duplicates():
    # 30 copies of one point: a point's own id may fall outside faiss's k + 1 ties
    rng = np.random.default_rng(3)
    x = np.vstack([np.zeros((30, 4)), rng.normal(size=(100, 4))]).astype(np.float32)
    idx, dist, _ = knn(x, 5, method="exact")
    assert not (idx == np.arange(len(x))[:, None]).any()
    assert (dist[:30] == 0).all()
    assert all(len(set(r)) == 5 for r in idx.tolist())


def test_hnsw_recall_on_50k_mixture():
    x = mixture(50_000, 16, 32, seed=4)
    idx, dist, info = knn(x, 20, method="hnsw", seed=0)
    assert info["method"] == "hnsw" and info["recall"] >= 0.98
    # independent check on other rows: fraction of sklearn's true neighbours found
    rows = np.random.default_rng(99).choice(len(x), 300, replace=False)
    nn = NearestNeighbors(n_neighbors=21, algorithm="brute").fit(x)
    _, ref = nn.kneighbors(x[rows])
    found = np.mean([len(set(a) & set(b[1:])) / 20 for a, b in zip(idx[rows].tolist(), ref.tolist())])
    print(f"hnsw recall: reported {info['recall']:.4f}, independent {found:.4f}, efSearch {info['ef_search']}")
    assert found >= 0.98
    assert not (idx == np.arange(len(x))[:, None]).any()


@pytest.mark.parametrize("method", ["hnsw", "kdtree"])
def test_large_groups_of_exact_copies(method):
    """Like real latents (blank image corners encode identically): a few vectors repeated
    thousands of times, plus groups smaller than k. Every row's neighbours must lie within its
    exact k-th distance (copies first, at distance 0), for queries in the base and new ones:
    for 98 % of them with HNSW, for all with the exact KD-tree."""
    rng = np.random.default_rng(8)
    spread = mixture(20_000, 8, 16, seed=8)
    copies = np.repeat(spread[:3], [6000, 3000, 40], axis=0)  # groups bigger and smaller than k
    small = np.repeat(spread[3:300], 3, axis=0)
    x = rng.permutation(np.concatenate([spread[300:], copies, small]))
    k = 20
    idx, dist, info = knn(x, k, method=method, seed=0)
    assert info["method"] == method and info["recall"] >= 0.98
    rows = rng.choice(len(x), 2000, replace=False)
    ref_d, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x[rows])
    kth = ref_d[:, -1]  # self (or a copy of it) at distance 0 takes the first place
    got = np.linalg.norm(x[idx[rows]] - x[rows, None], axis=2)
    found = np.mean(got <= kth[:, None] + 1e-6)
    assert found >= (0.98 if method == "hnsw" else 1.0), found
    assert not (idx == np.arange(len(x))[:, None]).any()
    assert len(np.unique(idx[rows], axis=None)) > 1 and all(len(set(r)) == k for r in idx[rows].tolist())
    in_group = np.flatnonzero((x == spread[0]).all(axis=1))
    assert (dist[in_group] == 0).all() and np.isin(idx[in_group], in_group).all()
    # new points that coincide with a copied vector get k of its copies
    q_idx, q_dist, _ = knn_query(x, np.repeat(spread[2:3], 5, axis=0), k, method=method, seed=0)
    assert (q_dist == 0).all() and np.isin(q_idx, np.flatnonzero((x == spread[2]).all(axis=1))).all()


def test_kdtree_is_exact_and_auto_picks_it_for_low_dimensions():
    """method kdtree (cKDTree over the distinct rows) returns the exact k nearest: the same sorted
    distances as brute force, for the base's own rows and for new queries; auto takes it above
    exact_max when C <= KDTREE_MAX_DIM, HNSW above that."""
    from geovq.graph import KDTREE_MAX_DIM

    x = mixture(6000, 8, 12, seed=11)
    x[100:400] = x[7]  # a group of copies bigger than k
    k = 15
    idx, dist, info = knn(x, k, method="kdtree")
    ref_d, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)
    np.testing.assert_allclose(dist, ref_d[:, 1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dist, np.linalg.norm(x[idx] - x[:, None], axis=2), rtol=1e-5, atol=1e-6)
    assert not (idx == np.arange(len(x))[:, None]).any() and all(len(set(r)) == k for r in idx.tolist())
    new = mixture(500, 8, 12, seed=12)
    q_idx, q_dist, _ = knn_query(x, new, k, method="kdtree")
    np.testing.assert_allclose(q_dist, NearestNeighbors(n_neighbors=k).fit(x).kneighbors(new)[0], rtol=1e-5, atol=1e-6)
    assert knn(x, k, exact_max=1000)[2]["method"] == "kdtree"
    assert knn(x, k)[2]["method"] == "exact"
    wide = mixture(3000, KDTREE_MAX_DIM + 1, 4, seed=13)
    assert knn(wide, 5, exact_max=1000, seed=0)[2]["method"] == "hnsw"
    with pytest.raises(ValueError, match="must be one of"):
        knn(x, k, method="ball")


@pytest.mark.parametrize("sym", ["union", "mutual"])
def test_knn_graph_edges_and_lengths(sym):
    x = mixture(800, 5, 3, seed=5)
    k = 6
    G, info = knn_graph(x, k, symmetrize=sym, method="exact")
    assert sp.isspmatrix_csr(G) and G.dtype == np.float64 and G.shape == (800, 800)
    assert (G != G.T).nnz == 0
    assert G.diagonal().sum() == 0 and (G.data > 0).all()
    ref_i, _ = sk_knn(x, x, k, exclude_self=True)
    A = np.zeros((800, 800), bool)
    A[np.repeat(np.arange(800), k), ref_i.ravel()] = True
    want = (A | A.T) if sym == "union" else (A & A.T)
    np.testing.assert_array_equal(G.toarray() > 0, want)
    r, c = G.nonzero()
    np.testing.assert_allclose(G[r, c].A1, np.linalg.norm(x[r] - x[c], axis=1), rtol=1e-5)
    assert info["n_edges"] == want.sum() // 2
    assert info["n_components"] == nx.number_connected_components(to_nx(G))


def test_union_contains_mutual():
    x = mixture(1000, 4, 6, seed=6)
    U, _ = knn_graph(x, 5, symmetrize="union")
    M, _ = knn_graph(x, 5, symmetrize="mutual")
    assert M.nnz < U.nnz
    assert ((M > 0).astype(int) - (U > 0).astype(int)).max() <= 0


def test_duplicates_stay_edges():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    x[50] = x[10]
    x[51] = x[10]
    G, info = knn_graph(x, 4)
    for a, b in [(10, 50), (10, 51), (50, 51)]:
        assert G[a, b] > 0 and G[a, b] <= info["floor"]  # stored, tiny, positive
    d = dijkstra(G, directed=False, indices=10)
    assert d[50] <= info["floor"] and d[51] <= info["floor"]
    # scipy and networkx agree on connectivity with these edges
    assert connected_components(G)[0] == nx.number_connected_components(to_nx(G))


def three_clusters(seed=8):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0, 0], [40, 0, 0], [0, 60, 5]], dtype=np.float32)
    sizes = [120, 150, 200]
    return np.vstack([c + rng.normal(size=(m, 3)) for c, m in zip(centers, sizes)]).astype(np.float32)


def test_bridging_exact_closest_pairs():
    x = three_clusters()
    G, info = knn_graph(x, 8)  # k = 8: each cluster connected, clusters apart
    assert info["n_components"] == 3
    G2, n_bridges = bridge_components(G, x)
    assert nx.is_connected(to_nx(G2))
    assert n_bridges == 2
    assert (G2 != G2.T).nnz == 0
    B = (G2 - G).tocoo()
    B = {(min(a, b), max(a, b)): w for a, b, w in zip(B.row, B.col, B.data) if w != 0}
    assert len(B) == 2
    # Boruvka rule, by brute force: each round, every component but the largest adds its
    # closest pair to the rest (here round 1: clusters 0 and 1 both pick the same pair;
    # round 2: cluster 2, now the smaller, links to the merged pair)
    H, expect = G.copy(), set()
    while True:
        n_comp, comp = connected_components(H)
        if n_comp == 1:
            break
        largest = np.argmax(np.bincount(comp))
        for c in set(range(n_comp)) - {largest}:
            inside, outside = np.flatnonzero(comp == c), np.flatnonzero(comp != c)
            D = cdist(x[inside], x[outside])
            i, j = np.unravel_index(np.argmin(D), D.shape)
            a, b = inside[i], outside[j]
            expect.add((min(a, b), max(a, b)))
            H = H + sp.csr_matrix(([1.0, 1.0], ([a, b], [b, a])), shape=H.shape)
    assert set(B) == expect
    for (a, b), w in B.items():
        assert w == pytest.approx(np.linalg.norm(x[a].astype(np.float64) - x[b]), rel=1e-6)


def test_bridging_many_components_mutual():
    x = three_clusters(9)
    G, info = knn_graph(x, 2, symmetrize="mutual")
    n_comp = info["n_components"]
    assert n_comp > 10
    G2, n_bridges = bridge_components(G, x)
    H = to_nx(G2)
    assert nx.is_connected(H)
    assert n_bridges == n_comp - 1  # a spanning forest of the components: the minimum
    assert (G2 != G2.T).nnz == 0 and (G2.data > 0).all()


def test_bridging_descent_mode_connects():
    x = three_clusters(10)
    G, info = knn_graph(x, 3, symmetrize="mutual")
    G2, n_bridges = bridge_components(G, x, exact_pairs=0, seed=1)  # force the approximate search
    assert nx.is_connected(to_nx(G2))
    assert n_bridges >= info["n_components"] - 1
    B = (G2 - G).tocoo()
    for a, b, w in zip(B.row, B.col, B.data):
        if w:
            assert w == pytest.approx(np.linalg.norm(x[a].astype(np.float64) - x[b]), rel=1e-6)


def test_bad_inputs_are_one_line_value_errors():
    x = np.zeros((15, 3), np.float32) + np.arange(15)[:, None]
    with pytest.raises(ValueError, match=r"^k=20 must be < number of nodes N=15$"):
        knn(x, 20)
    with pytest.raises(ValueError, match=r"^k=20 must be < number of nodes N=15$"):
        knn_graph(x, 20)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"^latents: 1 row\(s\) contain NaN or inf"):
        check_latents(bad, "latents")
    with pytest.raises(ValueError, match=r"^x: .*NaN"):
        knn_graph(bad, 3)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"^x: .*inf"):
        knn(bad, 3)
    with pytest.raises(ValueError, match=r"^z: expected a 2-D array"):
        check_latents(np.zeros((2, 3, 4)), "z")
    with pytest.raises(ValueError, match="symmetrize"):
        knn_graph(x, 3, symmetrize="both")
    for err in (pytest.raises(ValueError),):
        with err as e:
            knn(x, 20)
        assert "\n" not in str(e.value)


def test_bench_knn_compares_methods_against_the_exact_one(tmp_path, monkeypatch):
    """benchmarks/bench_knn.py on latents files with copied cells: the exact methods (faiss flat,
    KD-tree) find every row's exact neighbours (graph and test query), HNSW at least its 98 %."""
    import importlib.util

    from conftest import ROOT

    rng = np.random.default_rng(21)
    for name, n in (("train", 500), ("test", 60)):
        mu = rng.normal(size=(n, 4, 3, 3)).astype(np.float32)
        mu[: n // 5, :, 0, 0] = 0.0  # blank corners: one vector copied many times
        np.savez(tmp_path / f"{name}.npz", mu=mu, labels=np.zeros(n, np.int64))
    spec = importlib.util.spec_from_file_location("bench_knn", ROOT / "benchmarks" / "bench_knn.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--latents", str(tmp_path / "train.npz"), "--latents-test", str(tmp_path / "test.npz"), "--k", "10"]
    import faiss
    import torch

    threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", ""))  # restored after the test
    try:  # the benchmark sets the process's threads: give the later tests theirs back
        rows = {r["method"]: r for r in bench.main(argv + ["--methods", "exact,kdtree,hnsw", "--threads", "1"])}
    finally:
        torch.set_num_threads(threads[0])
        faiss.omp_set_num_threads(threads[1])
    assert rows["exact"]["graph_within"] == rows["exact"]["query_within"] == 1.0
    assert rows["kdtree"]["graph_within"] == rows["kdtree"]["query_within"] == 1.0
    assert rows["hnsw"]["graph_within"] >= 0.98 and rows["hnsw"]["query_within"] >= 0.98
