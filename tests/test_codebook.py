"""Euclidean codebook: cells layout, k-means quality vs scikit-learn, nearest-centroid test codes."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from geovq.codebook import EuclideanKMeans, from_cells, nearest_centroid, quantize, to_cells


def test_cells_roundtrip_and_order():
    mu = np.random.default_rng(0).normal(size=(3, 5, 2, 4)).astype(np.float32)
    cells = to_cells(mu)
    assert cells.shape == (3 * 2 * 4, 5)
    np.testing.assert_array_equal(cells[1 * 8 + 1 * 4 + 2], mu[1, :, 1, 2])  # id = n*H*W + h*W + w
    np.testing.assert_array_equal(from_cells(cells, (2, 4)), mu)


def test_quantize_is_codebook_lookup():
    codebook = np.arange(12, dtype=np.float32).reshape(4, 3)
    codes = np.array([[[0, 3], [2, 1]]])
    z = quantize(codebook, codes)
    assert z.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(z[0, :, 0, 1], codebook[3])


def test_nearest_centroid_matches_brute_force():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(40, 6)).astype(np.float32)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    labels, dist = nearest_centroid(x, centers, batch=128)
    d = np.linalg.norm(x[:, None] - centers[None], axis=2)
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_allclose(dist, d.min(1), rtol=1e-4, atol=1e-5)


def test_kmeans_close_to_sklearn_and_predicts_new_points():
    rng = np.random.default_rng(2)
    centers = rng.normal(scale=5, size=(8, 4))
    x = (centers[rng.integers(0, 8, 2000)] + rng.normal(size=(2000, 4))).astype(np.float32)
    ours = EuclideanKMeans(8, n_iter=30, n_init=5, seed=0).fit(x)
    ref = KMeans(8, n_init=5, random_state=0).fit(x)
    assert ours.inertia_ <= ref.inertia_ * 1.05
    new = (centers[rng.integers(0, 8, 300)] + rng.normal(size=(300, 4))).astype(np.float32)
    d = np.linalg.norm(new[:, None] - ours.cluster_centers_[None], axis=2)
    np.testing.assert_array_equal(ours.predict(new), d.argmin(1))


def test_kmeans_seeded_and_K_check():
    x = np.random.default_rng(3).normal(size=(300, 3)).astype(np.float32)
    a = EuclideanKMeans(5, seed=1).fit(x).cluster_centers_
    b = EuclideanKMeans(5, seed=1).fit(x).cluster_centers_
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="K=400"):
        EuclideanKMeans(400).fit(x)


# ---------------------------------------------------------------- Euclidean K-medoids (the control)
def _blobs(n_blobs=6, per=15, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(n_blobs, dim))
    return (centres[:, None] + rng.normal(size=(n_blobs, per, dim))).reshape(-1, dim).astype(np.float32)


@pytest.mark.parametrize("block", [1, 7, 64, 500])
def test_euclidean_distances_are_cdists_bits_for_any_block(block):
    """The dense matrix FasterPAM runs on: scipy's cdist in float64, rounded to float32, zero
    diagonal, bit for bit whatever the row block (the reused buffer's last block is a short one)."""
    from scipy.spatial.distance import cdist

    from geovq.codebook import euclidean_distances

    x = np.random.default_rng(3).normal(size=(203, 8)).astype(np.float32)
    x[5] = x[9]  # a repeated cell: distance exactly 0
    want = cdist(x.astype(np.float64), x.astype(np.float64)).astype(np.float32)
    np.fill_diagonal(want, 0.0)
    got = euclidean_distances(x, block=block)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert got[5, 9] == 0.0


def test_euclidean_kmedoids_is_a_local_optimum_of_the_unsquared_objective():
    from scipy.spatial.distance import cdist

    from geovq.codebook import EuclideanKMedoids

    x = _blobs()
    km = EuclideanKMedoids(6, seed=0).fit(x)
    D = cdist(x, x)
    np.testing.assert_array_equal(km.labels_, D[:, km.medoids_].argmin(1))  # nearest medoid
    assert km.objective_ == pytest.approx(D[np.arange(len(x)), km.medoids_[km.labels_]].sum(), rel=1e-5)
    # no single swap of a medoid for a non-medoid lowers the objective (what PAM converges to)
    best = km.objective_
    for j in range(6):
        for c in np.setdiff1d(np.arange(len(x)), km.medoids_):
            trial = km.medoids_.copy()
            trial[j] = c
            assert D[:, trial].min(1).sum() >= best - 1e-3
    np.testing.assert_array_equal(km.cluster_centers_, x[km.medoids_])
    np.testing.assert_array_equal(km.predict(x), km.labels_)


def test_geodesic_kmedoids_on_a_complete_euclidean_graph_equals_euclidean_kmedoids():
    """graph vs kmedoids isolates the graph's shortest paths: with every pair an edge of Euclidean
    length, geodesics are straight lines and both reach the same medoids and objective."""
    import scipy.sparse as sp
    from scipy.spatial.distance import cdist

    from geovq.codebook import EuclideanKMedoids
    from geovq.kmedoids import GeodesicKMedoids

    x = _blobs(seed=3)
    D = cdist(x.astype(np.float64), x.astype(np.float64))
    G = sp.csr_matrix(D)  # complete graph (the zero diagonal is no edge)
    geo = GeodesicKMedoids(6, seed=0).fit(G, x)
    euc = EuclideanKMedoids(6, seed=0).fit(x)
    np.testing.assert_array_equal(np.sort(geo.medoids_), np.sort(euc.medoids_))
    assert geo.objective_[-1] == pytest.approx(euc.objective_, rel=1e-5)


def test_euclidean_kmedoids_refuses_too_many_cells_naming_the_key(monkeypatch):
    import geovq.codebook as cb

    monkeypatch.setattr(cb, "KMEDOIDS_MAX_CELLS", 50)
    with pytest.raises(ValueError, match="codebook.fit_cells"):
        cb.EuclideanKMedoids(4).fit(_blobs())
