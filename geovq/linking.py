"""Links of new cells (outside a graph) to their k nearest graph nodes, with Euclidean or pull-back
metric lengths: the input of geovq.voronoi.assign_new."""

from __future__ import annotations

import numpy as np


def link_new_cells(
    new_ids,
    mu,
    x_nodes,
    k,
    *,
    seed,
    new_point_metric="exact",
    metrics_nodes=None,
    pull=None,
    device="cpu",
    precision=None,
    metrics_new=None,
    knn_method="auto",
    exact_max=200_000,
):
    """Links of cells outside the graph to their k nearest nodes: (nbr (M, k) node ids, lengths (M, k));
    a cell's code is then the label of the shortest path through them (:func:`geovq.voronoi.assign_new`).

    new_ids: the cells' ids in ``mu`` (N, C, H, W) (cell id = n*H*W + h*W + w); x_nodes: the graph's
    node vectors. pull: None (Euclidean link lengths), or the (decode, weight) of the graph's
    pull-back metric (geovq.riemann.pullback) with the nodes' metrics ``metrics_nodes``; then
    ``new_point_metric`` "exact" computes each new cell's own metric, "one_sided" uses the node's
    at both ends (geovq.riemann.new_point_lengths); precision: cell_metrics' (that of the nodes').
    metrics_new: with "exact", the new cells' metrics (M, C, C) when already computed (rule
    test_metrics), else they are computed here. knn_method, exact_max: how the k nearest nodes are
    found (geovq.graph.knn_query; config graph.knn_method, graph.exact_max, as for the graph)."""
    from geovq.codebook import to_cells
    from geovq.graph import knn_query

    x_new = to_cells(mu)[new_ids]
    nbr, nbr_euc, _ = knn_query(x_nodes, x_new, k, method=knn_method, exact_max=exact_max, seed=seed)
    if pull is None:
        return nbr, nbr_euc.astype(np.float64)
    from geovq.riemann import cell_metrics, new_point_lengths

    if new_point_metric != "exact":
        metrics_new = None  # one-sided: the graph node's metric at both ends
    elif metrics_new is None:
        decode, weight = pull
        metrics_new = cell_metrics(decode, mu, new_ids, weight=weight, device=device, precision=precision)
    elif len(metrics_new) != len(new_ids):
        raise ValueError(f"metrics_new: {len(metrics_new)} metrics for {len(new_ids)} new cells")
    return nbr, new_point_lengths(metrics_new, x_new, metrics_nodes, x_nodes, nbr)
