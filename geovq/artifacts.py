"""Readers and writers of the artifacts stages share: latents, codes, graphs, CSV tables, classifier, images."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from geovq.io import GeovqError, atomic_path, load_npz, save_npz


def load_latents(path):
    """Latent means ``mu`` (N, C, H, W), finite, and their labels, of a VAE's (or VQ-VAE's) latents file."""
    d = load_npz(path, ("mu", "labels"))
    mu = d["mu"]
    if mu.ndim != 4 or not np.isfinite(mu).all():
        raise GeovqError(
            f"{path}: expected finite latents mu (N, C, H, W), got {mu.shape}"
            + ("" if np.isfinite(mu).all() else " with NaN/inf")
        )
    return mu, d["labels"]


def load_codes(path, K=None):
    """A codes file (codes (N, H, W) in [0, K), image_index, labels, K) as a dict; K defaults to the file's."""
    d = load_npz(path, ("codes", "image_index", "labels", "K"))
    K = int(d["K"]) if K is None else K
    if d["codes"].ndim != 3:
        raise GeovqError(f"{path}: expected codes (N, H, W), got {d['codes'].shape}")
    if d["codes"].min() < 0 or d["codes"].max() >= K:
        raise GeovqError(f"{path}: codes must lie in [0, {K}), found [{d['codes'].min()}, {d['codes'].max()}]")
    return d


def code_subset(n, size, seed, split):
    """The images of a split that get codes: the same subset for every quantizer (paired). Test
    images are also the same for every seed (the study's contrasts pair them across seeds); train
    images, the priors' data, are drawn per seed."""
    from geovq.data import subset_indices

    return subset_indices(n, size, seed * 1000 + 1 if split == "train" else 2)


def grid_cell_ids(image_index, grid):
    """Flat cell ids n*H*W + h*W + w (geovq.codebook.to_cells' order) of every cell of the images
    ``image_index``, image by image: the cells a quantizer codes for those images."""
    hw = int(grid[0]) * int(grid[1])
    return (np.asarray(image_index, dtype=np.int64)[:, None] * hw + np.arange(hw)[None]).ravel()


def fd_halves(n, size, n_max):
    """(a, b): two disjoint seeded sets of n_fd = min(``n_max``, M // 2) test images each, drawn from
    the M coded test images (:func:`code_subset`), so the same for every quantizer, variant and seed.
    Every Fréchet distance and KID is taken against b at n_fd images; the floor is a against b, and
    reconstructions are of a's images (reconstructions of b's own images would share their noise)."""
    idx = code_subset(n, size, 0, "test")
    n_fd = min(n_max, len(idx) // 2)
    if n_fd < 2:
        raise GeovqError(f"test halves need at least 2 images each, got {n_fd} of {len(idx)} coded test images")
    order = idx[np.random.default_rng(4).permutation(len(idx))]
    return np.sort(order[:n_fd]), np.sort(order[n_fd : 2 * n_fd])


def load_fd_reference(path):
    """The file of rule ``fd_reference``: indices ``a``, ``b`` into the test split, their
    classifier features ``features_a``, ``features_b`` (n_fd, F) and the floor (``fd_floor_test_halves`` ...)."""
    d = load_npz(path, ("a", "b", "features_a", "features_b", "n_fd"))
    n = int(d["n_fd"])
    if not (len(d["a"]) == len(d["b"]) == len(d["features_a"]) == len(d["features_b"]) == n):
        raise GeovqError(f"{path}: halves and their features must all have n_fd={n} rows")
    if np.intersect1d(d["a"], d["b"]).size:
        raise GeovqError(f"{path}: the test halves a and b share images")
    return d


def positions(index, wanted, error):
    """Positions in ``index`` (sorted, unique) of the values ``wanted``; GeovqError(``error``) when some are absent."""
    index, wanted = np.asarray(index), np.asarray(wanted)
    pos = np.searchsorted(index, wanted)
    if len(index) == 0 or not np.array_equal(index[np.minimum(pos, len(index) - 1)], wanted):
        raise GeovqError(error)
    return pos


def fit_cell_ids(n_cells, fit_cells, seed):
    """The train cells every post-hoc quantizer of a run is fitted on (k-means, K-medoids, the
    graph's nodes): all, or a seeded subsample of ``fit_cells`` (config codebook.fit_cells)."""
    from geovq.data import subset_indices

    return subset_indices(n_cells, fit_cells, seed * 1000 + 3)


def load_cells(path):
    """(ids (M,) int64 into the run's train cells, x (M, C) float32) of a cells.npz."""
    d = load_npz(path, ("ids", "x"))
    if d["x"].ndim != 2 or len(d["x"]) != len(d["ids"]):
        raise GeovqError(f"{path}: expected ids (M,) and cell vectors x (M, C), got {d['ids'].shape}, {d['x'].shape}")
    return d["ids"], d["x"]


def save_graph(path, G, **extra):
    """A sparse graph (CSR arrays) and ``extra`` arrays in one npz."""
    import scipy.sparse as sp

    G = sp.csr_matrix(G)
    save_npz(path, data=G.data, indices=G.indices, indptr=G.indptr, shape=np.array(G.shape), **extra)


def load_graph(path, keys=()):
    """(CSR graph, the file's arrays) of a graph written by `save_graph`, with ``keys`` required."""
    import scipy.sparse as sp

    d = load_npz(path, ("data", "indices", "indptr", "shape", *keys))
    G = sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=tuple(d["shape"]))
    return G, d


def write_csv(path, rows, columns=None):
    """Rows (dicts with the same keys) as a CSV file, written atomically. columns: the header when
    there may be no rows (then a header-only file); without it an empty ``rows`` is an error."""
    if not rows and columns is None:
        raise ValueError(f"{path}: no rows to write and no columns given")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns) if columns is not None else list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def as_uint8(images):
    """Float images in [0, 1] -> uint8, the form real images have (and samples are stored in)."""
    import torch

    return torch.as_tensor(images).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def read_classifier(inp, params, device):
    """The job's feature classifier (input ``classifier``), checked to be the dataset's."""
    from geovq.classifier import load_classifier

    return load_classifier(inp.classifier, device, dataset=params.dataset)
