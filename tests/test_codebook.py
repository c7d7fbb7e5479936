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
