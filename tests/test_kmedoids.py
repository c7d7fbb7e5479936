"""Parallel medoid updates of geovq.kmedoids: the same fit whatever the number of worker processes."""

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from geovq.graph import bridge_components, knn_graph
from geovq.kmedoids import GeodesicKMedoids, _cluster_order, _update_pool, fit_medoids, medoid_update
from geovq.voronoi import voronoi


@pytest.fixture(scope="module")
def many_cells():
    """A kNN graph of 3 000 clustered 6-d points, to be cut into 60 cells."""
    rng = np.random.default_rng(25)
    means = rng.normal(scale=3.0, size=(12, 6))
    x = (means[rng.integers(12, size=3000)] + rng.normal(size=(3000, 6))).astype(np.float32)
    G, _ = knn_graph(x, 10)
    G, _ = bridge_components(G, x)
    return G, x


def test_update_pool_is_worker_processes_above_one_job(many_cells):
    G, _ = many_cells
    assert _update_pool(G, 1) is None
    pool = _update_pool(G, 2)
    assert isinstance(pool, ProcessPoolExecutor)
    pool.shutdown()


def test_medoid_updates_in_workers_equal_the_serial_ones(many_cells):
    G, x = many_cells
    k = 60
    medoids = np.random.default_rng(0).choice(G.shape[0], k, replace=False)
    _, label = voronoi(G, medoids)
    order, starts = _cluster_order(label, k)
    todo = np.arange(k)
    # exact_max 40: most cells get the seeded, sampled update, whose seed must travel with the task
    km = GeodesicKMedoids(k, exact_max=40, seed=5)
    loc = np.full(G.shape[0], -1, dtype=np.int64)
    serial = km._medoid_updates(G, order, starts, medoids, todo, loc, None)
    direct = [
        medoid_update(G, order[starts[j] : starts[j + 1]], current=medoids[j], exact_max=40, seed=5 + j) for j in todo
    ]
    assert serial == direct
    for n_jobs in (2, 3):
        km.n_jobs = n_jobs
        with _update_pool(G, n_jobs) as pool:
            assert km._medoid_updates(G, order, starts, medoids, todo, loc, pool) == serial
    assert (loc == -1).all()  # the caller's scratch, untouched by the workers


def test_fit_does_not_depend_on_the_number_of_jobs(many_cells):
    G, x = many_cells
    fits = {
        n_jobs: GeodesicKMedoids(60, init="random", exact_max=40, seed=2, n_jobs=n_jobs).fit(G, x)
        for n_jobs in (1, 2, 3)
    }
    ref = fits[1]
    assert ref.n_iter_ >= 3 and ref.n_swaps_ > 0  # several alternations, and one after the swaps
    for n_jobs, fit in fits.items():
        np.testing.assert_array_equal(fit.medoids_, ref.medoids_, err_msg=f"n_jobs={n_jobs}")
        np.testing.assert_array_equal(fit.labels_, ref.labels_)
        np.testing.assert_array_equal(fit.dist_, ref.dist_)
        assert fit.objective_ == ref.objective_ and fit.n_swaps_ == ref.n_swaps_


def test_fit_medoids_threads(many_cells):
    G, x = many_cells
    cfg = {"init": "kmeans", "max_iter": 5, "swap": False}
    one = fit_medoids(G, x, 50, cfg, 0)
    two = fit_medoids(G, x, 50, cfg, 0, threads=2)
    assert one.n_jobs == 1 and two.n_jobs == 2
    np.testing.assert_array_equal(one.medoids_, two.medoids_)
    assert one.objective_ == two.objective_


@pytest.mark.parametrize("n_jobs", [0, 1.5, "2"])
def test_bad_n_jobs_is_a_value_error(many_cells, n_jobs):
    G, x = many_cells
    with pytest.raises(ValueError, match="n_jobs=.* must be an integer >= 1"):
        GeodesicKMedoids(10, n_jobs=n_jobs).fit(G, x)
