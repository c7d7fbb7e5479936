"""Latent cells and the Euclidean k-means codebook (the baseline quantizer)."""

from __future__ import annotations

import numpy as np


def to_cells(mu: np.ndarray) -> np.ndarray:
    """(N, C, H, W) latent grids -> (N*H*W, C) cell vectors, cell id = n*H*W + h*W + w."""
    n, c, h, w = mu.shape
    return np.ascontiguousarray(mu.transpose(0, 2, 3, 1).reshape(n * h * w, c), dtype=np.float32)


def from_cells(cells: np.ndarray, grid_shape) -> np.ndarray:
    """Inverse of ``to_cells``: (N*H*W, C) -> (N, C, H, W)."""
    h, w = grid_shape
    c = cells.shape[1]
    return np.ascontiguousarray(cells.reshape(-1, h, w, c).transpose(0, 3, 1, 2))


def quantize(codebook: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Code grids (N, H, W) -> quantized latent grids (N, C, H, W)."""
    n, h, w = codes.shape
    return from_cells(codebook[codes.reshape(-1)], (h, w))


def nearest_centroid(x: np.ndarray, centers: np.ndarray, batch: int = 65536):
    """(index, Euclidean distance) of the nearest centre for each row of ``x`` (exact, faiss flat L2)."""
    import faiss

    index = faiss.IndexFlatL2(centers.shape[1])
    index.add(np.ascontiguousarray(centers, dtype=np.float32))
    labels = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float32)
    for i in range(0, len(x), batch):
        d, lab = index.search(np.ascontiguousarray(x[i : i + batch], dtype=np.float32), 1)
        labels[i : i + batch], dist[i : i + batch] = lab[:, 0], np.sqrt(np.maximum(d[:, 0], 0))
    return labels, dist


class EuclideanKMeans:
    """k-means (faiss, seeded) with the scikit-learn estimator surface used by every quantizer."""

    def __init__(self, n_clusters: int, *, n_iter: int = 25, n_init: int = 1, seed: int = 0):
        self.n_clusters, self.n_iter, self.n_init, self.seed = n_clusters, n_iter, n_init, seed

    def fit(self, x: np.ndarray):
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.n_clusters > len(x):
            raise ValueError(f"codebook K={self.n_clusters} is larger than the number of cells {len(x)}")
        km = faiss.Kmeans(
            x.shape[1],
            self.n_clusters,
            niter=self.n_iter,
            nredo=self.n_init,
            seed=self.seed,
            max_points_per_centroid=1_000_000,
            verbose=False,
        )
        km.train(x)
        self.cluster_centers_ = km.centroids.copy()
        self.labels_, dist = nearest_centroid(x, self.cluster_centers_)
        self.inertia_ = float((dist.astype(np.float64) ** 2).sum())
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return nearest_centroid(x, self.cluster_centers_)[0]


# Dense distance matrices above this many cells would not fit next to other jobs (float32:
# 4 N^2 bytes, 1.6 GB at 20 000 cells, 6.4 GB at 40 000).
KMEDOIDS_MAX_CELLS = 40_000


def euclidean_distances(x: np.ndarray, block: int = 256) -> np.ndarray:
    """Dense (N, N) float32 matrix of exact Euclidean distances (float64 arithmetic, in row blocks).

    Each block goes through one reused float64 buffer (cdist's ``out``). A fresh 2 048-row block
    each time page-faulted in ~250 MB per block: at the default run's 15 000 cells of dim 8 that
    took 3.3-9.2 s against 1.0-3.0 s now (one core), for 1.1 s of cdist arithmetic. The same cdist
    on the same rows gives the same bits for any ``block`` (tests/test_codebook.py)."""
    from scipy.spatial.distance import cdist

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    D = np.empty((n, n), np.float32)
    buf = np.empty((min(block, n), n))
    for i in range(0, n, block):
        b = min(block, n - i)
        cdist(x[i : i + b], x, out=buf[:b])
        D[i : i + b] = buf[:b]
    np.fill_diagonal(D, 0.0)
    return D


def init_kmeans_snapped(x, k, seed):
    """K distinct row ids of ``x``: faiss k-means centroids, each snapped to its nearest unused row.

    The start of every K-medoids fit (Euclidean here, EuclideanKMedoids; geodesic in
    geovq.kmedoids.GeodesicKMedoids), so that K-medoids quantizers differ in their distances, not in
    where they start."""
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False, max_points_per_centroid=256)
    km.cp.min_points_per_centroid = 1  # silences faiss's "too few points" warning on tiny tests
    km.train(x)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, near = index.search(km.centroids, min(32, x.shape[0]))
    used = np.zeros(x.shape[0], dtype=bool)
    medoids = []
    for row in near:
        free = row[(row >= 0) & ~used[np.maximum(row, 0)]]
        if free.size:
            m = int(free[0])
        else:  # all 32 nearest taken: any unused node will do
            m = int(np.flatnonzero(~used)[0])
        used[m] = True
        medoids.append(m)
    return np.array(medoids, dtype=np.int64)


class EuclideanKMedoids:
    """K-medoids with straight-line distances: objective sum_i ||x_i - x_medoid(i)|| (unsquared).

    The Euclidean control of the geodesic K-medoids (geovq.kmedoids.GeodesicKMedoids): the same
    objective with graph geodesics replaced by straight lines, started from the same
    k-means-snapped medoids, solved by FasterPAM (Schubert & Rousseeuw 2021; the `kmedoids`
    package) on the dense distance matrix, single-threaded so that results do not depend on the
    machine. Up to KMEDOIDS_MAX_CELLS cells. Attributes after fit: medoids_ (K,) row ids,
    cluster_centers_ = x[medoids_], labels_ (N,), objective_ (float), n_iter_.
    """

    def __init__(self, n_clusters: int, *, max_iter: int = 100, seed: int = 0):
        self.n_clusters, self.max_iter, self.seed = n_clusters, max_iter, seed

    def fit(self, x: np.ndarray, D: np.ndarray | None = None):
        """D: the dense distance matrix of x (euclidean_distances), when already computed."""
        import kmedoids

        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.n_clusters > len(x):
            raise ValueError(f"codebook K={self.n_clusters} is larger than the number of cells {len(x)}")
        if len(x) > KMEDOIDS_MAX_CELLS:
            raise ValueError(
                f"kmedoids needs a dense {len(x)}x{len(x)} distance matrix; at most "
                f"{KMEDOIDS_MAX_CELLS} cells (config key 'codebook.fit_cells')"
            )
        if D is None:
            D = euclidean_distances(x)
        elif D.shape != (len(x), len(x)):
            raise ValueError(f"D: expected the ({len(x)}, {len(x)}) distances of x, got {D.shape}")
        init = init_kmeans_snapped(x, self.n_clusters, self.seed)
        res = kmedoids.fasterpam(D, init, max_iter=self.max_iter, n_cpu=1)
        self.medoids_ = np.asarray(res.medoids, dtype=np.int64)
        self.labels_ = np.asarray(res.labels, dtype=np.int64)
        self.objective_ = float(res.loss)
        self.n_iter_ = int(res.n_iter)
        self.cluster_centers_ = x[self.medoids_]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return nearest_centroid(x, self.cluster_centers_)[0]


def fit_euclidean(quantizer, x, K, codebook, seed, D=None):
    """The fitted k-means (``kmeans``) or Euclidean K-medoids (``kmedoids``, FasterPAM; ``D``: the
    dense distance matrix of ``x``, when already computed) of cells ``x``, as every Euclidean
    codebook is fitted (config section ``codebook``); rule ``rate_distortion`` fits its other Ks
    with it too. ValueError for another quantizer or too many cells."""
    if quantizer == "kmeans":
        return EuclideanKMeans(K, n_iter=codebook["kmeans_iters"], seed=seed).fit(x)
    if quantizer == "kmedoids":
        return EuclideanKMedoids(K, seed=seed).fit(x, D=D)
    raise ValueError(f"fit_euclidean: quantizer {quantizer!r} is not kmeans or kmedoids")
