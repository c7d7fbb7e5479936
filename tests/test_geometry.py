"""Geometry sheet functions against oracles: networkx, sklearn, isometric and linear decoders, closed-form path lengths."""

import itertools

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import nn

from geovq.codebook import to_cells
from geovq.assign import bernoulli_hellinger_features, image_distances
from geovq.geometry import (
    candidate_pools,
    distance_ratios,
    euclidean_to_pool,
    label_agreement,
    neighbourhood_preservation,
    new_cell_geodesic,
    pair_geodesics,
    path_length,
    trapezoid_check,
)
from geovq.graph import bridge_components, knn_graph, knn_query
from geovq.riemann import bernoulli_fisher_weight, cell_metrics, edge_lengths_from_metrics

# torch's forward-mode AD scripts its jvp decompositions on first use (torch-internal)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _complete(x):
    """Complete graph on the rows of x with Euclidean edge lengths (no stored diagonal)."""
    return sp.csr_matrix(cdist(x, x))


# --- distance ratios ----------------------------------------------------------------------------


def test_distance_ratios_are_one_on_a_complete_euclidean_graph():
    x = np.random.default_rng(0).normal(size=(40, 3))
    res = distance_ratios(_complete(x), x, n_pairs=500, n_sources=7, chunk=3)
    assert res["pairs"].shape == (500, 2) and len(np.unique(res["pairs"][:, 0])) <= 7
    assert (res["pairs"][:, 0] != res["pairs"][:, 1]).all()
    np.testing.assert_allclose(res["pair_ratio"], 1, rtol=1e-12)
    assert len(res["edge_ratio"]) == 40 * 39 // 2
    np.testing.assert_allclose(res["edge_ratio"], 1, rtol=1e-12)
    for row in res["summary"]:
        assert row["n_undefined"] == 0 and row["cv"] < 1e-12 and row["rel_iqr"] < 1e-12
        assert row["q05"] == pytest.approx(1) and row["q95"] == pytest.approx(1)


def test_geodesic_ratio_is_at_least_one_on_a_knn_graph():
    x = np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32)
    G, _ = knn_graph(x, 5)
    G, _ = bridge_components(G, x)
    res = distance_ratios(G, x, n_pairs=2000, n_sources=20, seed=3)
    assert np.isfinite(res["pair_ratio"]).all()
    assert res["pair_ratio"].min() >= 1 - 1e-6  # float32 vectors, float64 sums
    assert np.median(res["pair_ratio"]) > 1.05  # paths zigzag: the graph is not complete
    np.testing.assert_allclose(res["edge_ratio"], 1, rtol=1e-6)
    # seeded: the same pairs again, other pairs with another seed
    again = distance_ratios(G, x, n_pairs=2000, n_sources=20, seed=3)
    assert np.array_equal(again["pairs"], res["pairs"])
    assert not np.array_equal(distance_ratios(G, x, n_pairs=2000, n_sources=20, seed=4)["pairs"], res["pairs"])


def test_pair_geodesics_match_networkx():
    rng = np.random.default_rng(2)
    n = 30
    W = np.triu(rng.uniform(0.1, 2.0, size=(n, n)) * (rng.random((n, n)) < 0.15), 1)
    W[:, 25:] = 0  # nodes 25..29 form their own component
    W[25:, 25:] = np.triu(rng.uniform(0.1, 2.0, size=(5, 5)), 1)
    L = sp.csr_matrix(W + W.T)
    g = nx.from_scipy_sparse_array(L)
    pairs = np.array([(int(a), int(b)) for a, b in rng.integers(n, size=(200, 2))])
    got = pair_geodesics(L, pairs, chunk=4)
    want = [nx.shortest_path_length(g, a, b, weight="weight") if nx.has_path(g, a, b) else np.inf for a, b in pairs]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isinf(got).any() and np.isfinite(got).any()
    res = distance_ratios(L, rng.normal(size=(n, 2)), pairs=pairs)
    assert res["summary"][0]["n_undefined"] == int(np.isinf(got).sum() + (pairs[:, 0] == pairs[:, 1]).sum())


def test_distance_ratios_refuses_asymmetric_lengths():
    L = sp.csr_matrix(np.array([[0, 1.0], [2.0, 0]]))
    with pytest.raises(ValueError, match="symmetric"):
        distance_ratios(L, np.zeros((2, 1)))


# --- label agreement ----------------------------------------------------------------------------


def test_label_agreement_matches_sklearn_and_is_one_for_renamed_labels():
    rng = np.random.default_rng(3)
    a = rng.integers(8, size=500)
    renamed = rng.permutation(8)[a] + 100  # the same partition under other names
    b = np.where(rng.random(500) < 0.3, rng.integers(5, size=500), a)  # 8 vs up to 8 clusters, partly random
    c = rng.integers(3, size=500)
    labels = {"a": a, "renamed": renamed, "b": b, "c": c}
    rows = label_agreement(labels)
    assert [(r["a"], r["b"]) for r in rows] == list(itertools.combinations(labels, 2))
    for r in rows:
        assert r["n"] == 500
        assert r["ari"] == pytest.approx(adjusted_rand_score(labels[r["a"]], labels[r["b"]]), abs=1e-15)
        assert r["nmi"] == pytest.approx(normalized_mutual_info_score(labels[r["a"]], labels[r["b"]]), abs=1e-15)
    first = rows[0]
    assert first["ari"] == pytest.approx(1, abs=1e-15) and first["nmi"] == pytest.approx(1, abs=1e-15)
    assert all(r["ari"] < 0.9 for r in rows[1:])
    with pytest.raises(ValueError):
        label_agreement({"a": a, "short": a[:10]})


# --- neighbourhood preservation -----------------------------------------------------------------


def _orthonormal(rows, cols, seed):
    """(rows, cols) matrix with orthonormal columns, rows >= cols."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q.astype(np.float32)


class IsometryMLP(nn.Module):
    """1x1 grid: image = Q z with QᵀQ = I, so image distances are latent Euclidean distances."""

    def __init__(self, c=4, n_pix=12):
        super().__init__()
        self.Q = nn.Parameter(torch.from_numpy(_orthonormal(n_pix, c, 0)), requires_grad=False)

    def forward(self, z):
        return (z.flatten(1) @ self.Q.T).view(z.shape[0], 1, 3, -1)


class IsometryConv(nn.Module):
    """Spatial grid: a 1x1 conv with orthonormal weight columns; replacing one cell moves the image by
    exactly the cell's Euclidean displacement, wherever the cell is."""

    def __init__(self, c=4, out=6):
        super().__init__()
        self.conv = nn.Conv2d(c, out, 1, bias=False)
        self.conv.weight.data.copy_(torch.from_numpy(_orthonormal(out, c, 1))[:, :, None, None])

    def forward(self, z):
        return 0.5 + self.conv(z)  # a constant offset cancels in the difference


def test_isometric_decoder_preserves_euclidean_neighbourhoods_exactly():
    rng = np.random.default_rng(4)
    x_nodes = rng.normal(size=(200, 4)).astype(np.float32)
    Z_test = rng.normal(size=(30, 4, 1, 1)).astype(np.float32)
    pools = candidate_pools(30, 200, m=50, seed=5)
    assert pools.shape == (30, 50) and all(len(np.unique(p)) == 50 for p in pools)
    img = image_distances(IsometryMLP(), Z_test, np.arange(30), x_nodes, pools, batch_size=37)
    eu = euclidean_to_pool(to_cells(Z_test), x_nodes, pools)
    np.testing.assert_allclose(img, eu, rtol=1e-5)
    rows, overlap = neighbourhood_preservation(
        img, {"euclidean": eu, "farthest": lambda p: -euclidean_to_pool(to_cells(Z_test), x_nodes, p)}, pools=pools, k=5
    )
    by = {r["distance"]: r for r in rows}
    assert by["euclidean"]["overlap"] == 1 and by["euclidean"]["lo"] == 1 and by["euclidean"]["hi"] == 1
    assert (overlap["euclidean"] == 1).all()
    assert by["farthest"]["overlap"] == 0  # the 5 farthest of 50 are never among the 5 nearest
    assert by["euclidean"]["chance"] == 5 / 50


def test_image_distances_replace_the_right_cell_of_the_right_image():
    rng = np.random.default_rng(6)
    Z = rng.normal(size=(5, 4, 3, 3)).astype(np.float32)
    cells = rng.choice(5 * 9, size=12, replace=False)
    x_nodes = rng.normal(size=(40, 4)).astype(np.float32)
    pools = candidate_pools(12, 40, m=15, seed=7)
    img = image_distances(IsometryConv(), Z, cells, x_nodes, pools, batch_size=16)
    np.testing.assert_allclose(img, euclidean_to_pool(to_cells(Z)[cells], x_nodes, pools), rtol=1e-5, atol=1e-6)


def test_image_distances_of_the_spatial_vae_fused_equal_plain_in_eval_mode():
    from geovq.models import SpatialVAE

    torch.manual_seed(0)
    model = SpatialVAE((1, 8, 8), latent_channels=3, grid=2, channels=(4, 4))  # left in train mode
    model(torch.rand(4, 1, 8, 8))  # BatchNorm running statistics away from (0, 1)
    rng = np.random.default_rng(18)
    Z = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    x_nodes, pools = rng.normal(size=(20, 3)).astype(np.float32), candidate_pools(4, 20, m=6, seed=1)
    args = (model.decode, Z, np.array([0, 5, 10, 3]), x_nodes, pools)
    fused, plain = image_distances(*args), image_distances(*args, fuse=False, channels_last=False)
    assert model.training
    model.eval()
    with torch.no_grad():
        z = torch.from_numpy(Z[[1]]).repeat(6, 1, 1, 1)
        z[:, :, 0, 1] = torch.from_numpy(x_nodes[pools[1]])  # cell 5 = image 1, position (0, 1)
        want = (model.decode(z) - model.decode(torch.from_numpy(Z[[1]]))).flatten(1).norm(dim=1)
    np.testing.assert_allclose(plain[1], want.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-6)


def test_image_distance_targets_share_the_decodes_and_hellinger_is_the_bernoulli_one():
    """targets: one decode pass, one distance per feature map; the identity gives the plain distance,
    bernoulli_hellinger_features the Hellinger distance of the two product-Bernoulli images (x sqrt 2)."""
    from geovq.models import SpatialVAE

    torch.manual_seed(1)
    model = SpatialVAE((1, 8, 8), latent_channels=3, grid=2, channels=(4, 4)).eval()
    rng = np.random.default_rng(19)
    Z = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    x_nodes, pools = rng.normal(size=(20, 3)).astype(np.float32), candidate_pools(4, 20, m=6, seed=2)
    args = (model.decode, Z, np.array([0, 5, 10, 3]), x_nodes, pools)
    both = image_distances(*args, targets={"l2": lambda p: p, "hellinger": bernoulli_hellinger_features})
    np.testing.assert_allclose(both["l2"], image_distances(*args), rtol=1e-6)
    with torch.no_grad():  # cell 5 = image 1, position (0, 1), by hand
        z = torch.from_numpy(Z[[1]]).repeat(6, 1, 1, 1)
        z[:, :, 0, 1] = torch.from_numpy(x_nodes[pools[1]])
        p, q = model.decode(z).flatten(1).double(), model.decode(torch.from_numpy(Z[[1]])).flatten(1).double()
    hell = torch.sqrt(0.5 * ((p.sqrt() - q.sqrt()) ** 2 + ((1 - p).sqrt() - (1 - q).sqrt()) ** 2).sum(1))
    np.testing.assert_allclose(both["hellinger"][1], np.sqrt(2) * hell.numpy(), rtol=1e-4)
    assert not np.allclose(both["hellinger"] / both["hellinger"].max(), both["l2"] / both["l2"].max())


def test_paired_differences_against_a_reference_distance():
    img = np.tile(np.arange(10.0), (3, 1))
    good, bad = img.copy(), img[:, ::-1].copy()  # the image ranking itself, and its reverse
    rows, ov = neighbourhood_preservation(img, {"good": good, "bad": bad}, k=4, n_boot=200, reference="bad")
    by = {r["distance"]: r for r in rows}
    assert by["bad"]["diff"] == 0 and by["good"]["diff"] == pytest.approx(1.0)  # overlaps 1 and 0
    assert by["good"]["diff_lo"] == pytest.approx(1.0) and by["good"]["diff_hi"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference"):
        neighbourhood_preservation(img, {"good": good}, k=4, reference="nope")


def test_new_cell_geodesic_matches_dijkstra_from_each_link():
    rng = np.random.default_rng(8)
    n = 40
    W = np.triu(rng.uniform(0.5, 2.0, size=(n, n)) * (rng.random((n, n)) < 0.1), 1)
    L = sp.csr_matrix(W + W.T)
    T, k = 11, 4
    nbr = np.stack([rng.choice(n, size=k, replace=False) for _ in range(T)])
    length = rng.uniform(0.01, 1.0, size=(T, k))  # short links: a path through another new cell would be a shortcut
    nbr[0, 1] = nbr[0, 0]  # a node linked twice: the shorter link counts
    length[0, :2] = [0.7, 0.2]
    nbr[1, 2] = -1  # no link
    length[2, 0] = 0.0  # a new cell that coincides with a node
    D = dijkstra(L, directed=False)
    want = np.full((T, n), np.inf)
    for t in range(T):
        for i, ln in zip(nbr[t], length[t]):
            if i >= 0:
                want[t] = np.minimum(want[t], ln + D[i])
    np.testing.assert_allclose(new_cell_geodesic(L, nbr, length, chunk=3), want, rtol=1e-12)
    assert new_cell_geodesic(L, nbr, length)[2, nbr[2, 0]] == 0
    targets = candidate_pools(T, n, m=9, seed=9)
    got = new_cell_geodesic(L, nbr, length, targets, chunk=5)
    np.testing.assert_allclose(got, np.take_along_axis(want, targets, axis=1), rtol=1e-12)


def test_graph_geodesic_on_a_complete_euclidean_graph_preserves_neighbourhoods():
    rng = np.random.default_rng(10)
    x_nodes = rng.normal(size=(60, 4)).astype(np.float32)
    Z_test = rng.normal(size=(20, 4, 1, 1)).astype(np.float32)
    x_test = to_cells(Z_test)
    nbr, link, _ = knn_query(x_nodes, x_test, 10)
    pools = candidate_pools(20, 60, m=500)  # all 60 nodes
    geo = new_cell_geodesic(_complete(x_nodes.astype(np.float64)), nbr, link.astype(np.float64), pools)
    eu = euclidean_to_pool(x_test, x_nodes, pools)
    assert (geo >= eu - 1e-5).all()
    np.testing.assert_allclose(np.take_along_axis(geo, nbr, 1), np.take_along_axis(eu, nbr, 1), rtol=1e-5)
    img = image_distances(IsometryMLP(), Z_test, np.arange(20), x_nodes, pools)
    rows, _ = neighbourhood_preservation(img, {"graph": geo, "euclidean": eu}, k=5)
    assert [r["overlap"] for r in rows] == [1, 1]


def test_overlap_counts_the_shared_neighbours():
    img = np.tile(np.arange(10.0), (3, 1))  # image ranking: nodes 0, 1, 2, ... in every pool
    lat = np.array(
        [
            [0, 1, 4, 7, 2, 3, 5, 6, 8, 9],  # latent top 4 = nodes {0, 1, 4, 5}: 2 of the image's {0, 1, 2, 3}
            [0, 1, 2, 9, 3, 4, 5, 6, 7, 8],  # {0, 1, 2, 4}: 3
            [np.inf, 5, 6, 7, 0, 1, 2, 3, 4, 8],  # inf ranks last: {4, 5, 6, 7}: none
        ]
    )
    rows, ov = neighbourhood_preservation(img, {"lat": lat}, k=4)
    np.testing.assert_array_equal(ov["lat"], [0.5, 0.75, 0])
    assert rows[0]["overlap"] == pytest.approx(1.25 / 3) and rows[0]["chance"] == 0.4


def test_bootstrap_interval_brackets_the_mean():
    rng = np.random.default_rng(11)
    img = rng.random((200, 30))
    lat = img + 0.3 * rng.random((200, 30))
    rows, ov = neighbourhood_preservation(img, {"noisy": lat}, k=5, n_boot=500, seed=1)
    r = rows[0]
    assert 0 < r["lo"] < r["overlap"] < r["hi"] < 1
    se = ov["noisy"].std() / np.sqrt(200)
    assert r["hi"] - r["lo"] == pytest.approx(2 * 1.96 * se, rel=0.25)  # a normal interval's width


# --- path integrals -----------------------------------------------------------------------------


class Linear(nn.Module):
    """1x1 grid: image = A z."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(torch.as_tensor(A), requires_grad=False)

    def forward(self, z):
        return z.flatten(1) @ self.A.T


class Ridge(nn.Module):
    """1x1 grid, one output: tanh(a·z), so a segment's decoded length is |tanh(a·x_to) − tanh(a·x_from)|
    (monotone along a straight line); `logits` is a·z, whose Bernoulli Fisher–Rao length is
    2 |arcsin sqrt σ(a·x_to) − arcsin sqrt σ(a·x_from)|."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.as_tensor(a), requires_grad=False)

    def logits(self, z):
        return z.flatten(1) @ self.a[:, None]

    def forward(self, z):
        return torch.tanh(self.logits(z))


def _ridge_case(E=25, seed=12):
    rng = np.random.default_rng(seed)
    a = np.array([1.5, -0.5])
    x0, x1 = rng.normal(size=(E, 2)), rng.normal(size=(E, 2))
    return Ridge(torch.tensor(a)), x0, x1, x0 @ a, x1 @ a


def test_path_length_of_a_linear_decoder_is_the_trapezoid_and_the_norm():
    rng = np.random.default_rng(13)
    A = rng.normal(size=(7, 3))
    dec = Linear(torch.tensor(A))
    x = rng.normal(size=(50, 3))
    Z = x[:, :, None, None]
    G, _ = knn_graph(x.astype(np.float32), 4)
    L = edge_lengths_from_metrics(G, x, cell_metrics(dec, Z, np.arange(50), dtype=torch.float64))
    res = trapezoid_check(dec, Z, L, np.arange(50), x, n_edges=40, n_steps=8, dtype=torch.float64, batch_size=50)
    i, j = res["edges"].T
    norm = np.linalg.norm((x[j] - x[i]) @ A.T, axis=1)
    np.testing.assert_allclose(res["integral"], norm, rtol=1e-12)
    np.testing.assert_allclose(path_length(dec, Z, i, x[i], x[j], n_steps=3, n_points=1, dtype=torch.float64), norm)
    np.testing.assert_allclose(res["stored"], norm, rtol=1e-6)  # cell_metrics stores float32
    assert res["summary"]["mean_abs"] < 1e-6 and res["summary"]["n"] == 40


class LinearConv(nn.Module):
    """Linear spatial decoder with zero padding: a cell's Jacobian depends on its position, not on its image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Upsample(size=(6, 6)), nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1))

    def forward(self, z):
        return self.net(z)


def test_trapezoid_check_integrates_each_half_at_its_endpoints_position():
    rng = np.random.default_rng(14)
    Z = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    x_all = to_cells(Z)
    nodes = np.sort(rng.choice(len(x_all), size=40, replace=False))
    x = x_all[nodes]
    dec = LinearConv().double()
    G, _ = knn_graph(x, 5)
    L = edge_lengths_from_metrics(G, x, cell_metrics(dec, Z, nodes, dtype=torch.float64))
    res = trapezoid_check(dec, Z, L, nodes, x, n_edges=30, n_steps=2, dtype=torch.float64)
    # the positions differ along some edges, so the two halves differ, and together equal the stored length
    assert np.abs(res["integral_i"] - res["integral_j"]).max() > 1e-2 * res["integral"].max()
    np.testing.assert_allclose(res["stored"], res["integral"], rtol=1e-5)
    with pytest.raises(ValueError, match="differ"):
        trapezoid_check(dec, Z, L, nodes, x[::-1], n_edges=5)


def test_path_length_of_a_nonlinear_decoder_converges_to_the_closed_form():
    dec, x0, x1, s0, s1 = _ridge_case()
    exact = np.abs(np.tanh(s1) - np.tanh(s0))
    Z = x0[:, :, None, None]
    errs = []
    for n_steps in (2, 4, 8, 16, 32):
        got = path_length(dec, Z, np.arange(len(x0)), x0, x1, n_steps=n_steps, n_points=1, dtype=torch.float64)
        errs.append(np.abs(got - exact).max())
    assert all(b < a / 3 for a, b in zip(errs, errs[1:]))  # midpoint rule: error ~ n_steps^-2
    gauss = path_length(dec, Z, np.arange(len(x0)), x0, x1, n_steps=64, n_points=2, dtype=torch.float64)
    np.testing.assert_allclose(gauss, exact, rtol=1e-8)
    trapezoid = 0.5 * ((1 - np.tanh(s0) ** 2) + (1 - np.tanh(s1) ** 2)) * np.abs(s1 - s0)
    assert np.abs(trapezoid - exact).max() > 0.1 * exact.max()


def test_path_length_with_a_weight_is_the_bernoulli_fisher_rao_length():
    dec, x0, x1, s0, s1 = _ridge_case(seed=15)
    p0, p1 = 1 / (1 + np.exp(-s0)), 1 / (1 + np.exp(-s1))
    exact = 2 * np.abs(np.arcsin(np.sqrt(p1)) - np.arcsin(np.sqrt(p0)))
    Z = x0[:, :, None, None]
    opts = dict(weight=bernoulli_fisher_weight, n_points=2, dtype=torch.float64)
    got = path_length(dec.logits, Z, np.arange(len(x0)), x0, x1, **opts)
    np.testing.assert_allclose(got, exact, rtol=1e-8)


def test_trapezoid_check_on_a_nonlinear_decoder_reports_the_trapezoid_error():
    rng = np.random.default_rng(16)
    a = np.array([1.5, -0.5])
    dec = Ridge(torch.tensor(a))
    x = 1.5 * rng.normal(size=(60, 2))
    G, _ = knn_graph(x.astype(np.float32), 6)
    L = edge_lengths_from_metrics(G, x, cell_metrics(dec, x[:, :, None, None], np.arange(60), dtype=torch.float64))
    res = trapezoid_check(dec, x[:, :, None, None], L, np.arange(60), x, n_edges=50, n_points=2, dtype=torch.float64)
    s0, s1 = x[res["edges"][:, 0]] @ a, x[res["edges"][:, 1]] @ a
    exact = np.abs(np.tanh(s1) - np.tanh(s0))
    trapezoid = 0.5 * ((1 - np.tanh(s0) ** 2) + (1 - np.tanh(s1) ** 2)) * np.abs(s1 - s0)
    np.testing.assert_allclose(res["integral"], exact, rtol=1e-8)
    # float32 metrics: ΔᵀGΔ cancels where Δ is nearly orthogonal to a
    np.testing.assert_allclose(res["rel_err"], (trapezoid - exact) / exact, atol=1e-4)
    assert res["summary"]["mean_abs"] > 1e-3


class TanhConv(nn.Module):
    """Nonlinear spatial decoder: a cell's Jacobian depends on the other cells of its image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Upsample(size=(6, 6)), nn.Conv2d(4, 2, 3))

    def forward(self, z):
        return self.net(z)


def test_path_length_matches_a_reverse_mode_loop_in_the_cells_own_image():
    rng = np.random.default_rng(17)
    Z = rng.normal(size=(4, 3, 3, 3))
    dec = TanhConv().double()
    cells = np.array([0, 4, 13, 22, 35, 8])
    x0, x1 = to_cells(Z)[cells].astype(np.float64), rng.normal(size=(6, 3))
    n_steps = 5
    got = path_length(dec, Z, cells, x0, x1, n_steps=n_steps, n_points=1, dtype=torch.float64, batch_size=7)
    want = []
    for c, a, b in zip(cells, x0, x1):
        n, hw = divmod(int(c), 9)
        h, w = divmod(hw, 3)

        def image(v, n=n, h=h, w=w):
            z = torch.as_tensor(Z[n]).clone()
            z[:, h, w] = v
            return dec(z[None]).reshape(-1)

        speeds = []
        for t in (np.arange(n_steps) + 0.5) / n_steps:
            J = torch.autograd.functional.jacobian(image, torch.as_tensor(a + t * (b - a)))
            speeds.append(float(torch.linalg.vector_norm(J @ torch.as_tensor(b - a))))
        want.append(np.mean(speeds))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_empty_tables_are_header_only_or_refused(tmp_path):
    """A geometry sheet of one quantizer has no pairs to agree, of no pull-back metric no path
    integrals: a header-only CSV, never a crash on rows[0]; without a header an empty table is refused."""
    from geovq.artifacts import write_csv

    write_csv(tmp_path / "a.csv", [], columns=("a", "b"))
    assert (tmp_path / "a.csv").read_text().strip() == "a,b"
    with pytest.raises(ValueError, match="b.csv"):
        write_csv(tmp_path / "b.csv", [])
    assert not (tmp_path / "b.csv").exists()
