"""Stages of rules/codebook.smk: the train cells every post-hoc quantizer is fitted on, and the
Euclidean codebooks (k-means centroids, K-medoids) with their nearest-code codes."""

from __future__ import annotations

import numpy as np

from geovq.artifacts import code_subset, fit_cell_ids, load_cells, load_latents
from geovq.io import GeovqError, save_npz


def train_cells(inp, out, params, log):
    """One seeded set of train cells per run, shared by every post-hoc quantizer (paired fits)."""
    from geovq.codebook import to_cells

    mu, _ = load_latents(inp.latents_train)
    cells = to_cells(mu)
    ids = fit_cell_ids(len(cells), params.fit_cells, params.seed)
    save_npz(out.cells, ids=ids.astype(np.int64), x=cells[ids])
    log(f"{len(ids)} of {len(cells)} train cells (dim {cells.shape[1]}) -> {out.cells}")


def _write_nearest_codes(estimator, mu, y, idx, K, path, log, split):
    """Codes of the cells of images ``idx`` by nearest code vector (Euclidean), written to ``path``."""
    from geovq.codebook import to_cells

    n, c, h, w = mu[idx].shape
    codes = estimator.predict(to_cells(mu[idx])).reshape(n, h, w)
    save_npz(path, codes=codes, image_index=idx, labels=y[idx], K=np.int64(K))
    log(f"{split} codes {codes.shape} for {len(idx)} images (nearest code)")


def euclidean_codebook(inp, out, params, log):
    """k-means centroids (``kmeans``) or Euclidean K-medoids (``kmedoids``) of the shared train
    cells; train and test codes by nearest code vector."""
    from geovq.codebook import fit_euclidean

    ids, x = load_cells(inp.cells)
    K = params.codebook["K"]
    log(f"{params.quantizer} K={K} on {len(x)} train cells of dim {x.shape[1]}")
    try:
        est = fit_euclidean(params.quantizer, x, K, params.codebook, params.seed)
    except ValueError as e:
        raise GeovqError(str(e)) from None
    if params.quantizer == "kmeans":
        log(f"inertia (sum of squared distances) {est.inertia_:.6g}")
        extra = {}
    else:
        log(f"objective (sum of distances) {est.objective_:.6g} after {est.n_iter_} FasterPAM iterations")
        extra = {"medoids": est.medoids_, "medoid_cells": ids[est.medoids_]}
    save_npz(out.codebook, codebook=est.cluster_centers_.astype(np.float32), K=np.int64(K), fit_cell_ids=ids, **extra)
    for split in ("train", "test"):
        mu, y = load_latents(getattr(inp, f"latents_{split}"))
        idx = code_subset(len(mu), params.codebook[f"{split}_images"], params.seed, split)
        _write_nearest_codes(est, mu, y, idx, K, getattr(out, f"codes_{split}"), log, split)
