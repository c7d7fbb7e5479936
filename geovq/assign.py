"""How a test cell is assigned a code beyond the nearest code vector: by the decoder's pull-back metric
at the cell (`metric_codes`), and exactly in image space among the metric's best codes (`decode_codes`).

Both see a test cell x of a latent grid through the decoder, the grid's other cells held at their
continuous values. ``metric`` ranks every code c by (c − x)ᵀ G(x) (c − x), G(x) the pull-back metric
at x (geovq.riemann.cell_metrics): the first-order change of the decoded image when x is replaced
by c. ``decode`` decodes each of the metric's ``m`` best codes in x's place and keeps the one whose
image is closest to the model's own continuous reconstruction (never the real image) in the metric
kind's image distance (`IMAGE_FEATURES`): the exact, cell-by-cell version of what ``metric``
linearises, so decode − metric is the linearisation gap. Holding the other cells at their continuous
values is what the metric itself assumes (its Jacobian is taken with the other cells fixed), and it
keeps every cell's choice independent of the order cells are visited in. No graph is involved (the
graph's rule, ``geodesic``, is geovq.voronoi.assign_new; ``nearest`` is geovq.codebook.nearest_centroid).
"""

from __future__ import annotations

import numpy as np
import torch

from geovq.jvp import for_jvp
from geovq.riemann import _check_grid, _evaluating, _layout, _resolve_device, _split_cells


def _check_pools(pools, n_nodes=None):
    pools = np.asarray(pools)
    if pools.ndim != 2 or not np.issubdtype(pools.dtype, np.integer):
        raise ValueError(f"pools: expected a (T, m) integer array of node ids, got {pools.dtype} {pools.shape}")
    if n_nodes is not None and pools.size and (pools.min() < 0 or pools.max() >= n_nodes):
        raise ValueError(f"pools: node ids must lie in [0, {n_nodes})")
    return pools.astype(np.int64)


def image_distances(
    decode,
    Z,
    cells,
    x_nodes,
    pools,
    *,
    batch_size=1024,
    device=None,
    dtype=torch.float32,
    fuse=True,
    channels_last=True,
    targets=None,
):
    """What quantizing a test cell to each pool node does to its image: (T, m) float64.

    D[t, j] = ‖decode(Z_n with cell (h, w) replaced by x_nodes[pools[t, j]]) − decode(Z_n)‖ (flattened
    images), for test cell cells[t] = n*H*W + h*W + w of the grids Z (Nimg, C, H, W); on a 1x1 grid
    this is ‖decode(x_j) − decode(z_t)‖. decode: module, bound method or callable mapping
    (B, C, H, W) to images (B, ...), run in eval mode under torch.no_grad on `device` (default: the
    module's) in `dtype`, batch_size decodes per call. fuse: decode through `geovq.jvp.for_jvp`
    (the same function, faster: BatchNorm folded, upsample + conv fused); channels_last: the
    grids' memory layout (what the fused convolutions are fastest on).
    targets: None, or {name: f} with f mapping decoded images (B, P) to features (B, Q): then
    {name: (T, m)} of ‖f(decode(...)) − f(decode(Z_n))‖, every target from the same decodes (e.g.
    `bernoulli_hellinger_features` for the Hellinger distance of Bernoulli images).
    """
    Z = _check_grid(Z)
    n, h, w = _split_cells(cells, Z)
    x_nodes = np.asarray(x_nodes)
    pools = _check_pools(pools, len(x_nodes))
    T, m = pools.shape
    if len(n) != T or x_nodes.ndim != 2 or x_nodes.shape[1] != Z.shape[1]:
        raise ValueError(f"shapes do not match: {len(n)} cells, pools {pools.shape}, x_nodes {x_nodes.shape}")
    device = _resolve_device(decode, device)
    if fuse:
        decode = for_jvp(decode)
    fs = {None: lambda y: y} if targets is None else dict(targets)
    out = {name: np.empty(T * m, dtype=np.float64) for name in fs}
    t_of = np.repeat(np.arange(T), m)
    node = pools.ravel()

    def grids(t):  # the grids of the images of test cells t
        return Z[torch.as_tensor(n[t], device=Z.device)].to(device=device, dtype=dtype)

    def run(z):
        return decode(_layout(z, channels_last)).flatten(1)

    with _evaluating(decode):
        base = torch.cat([run(grids(np.arange(s, min(s + batch_size, T)))) for s in range(0, T, batch_size)])
        base = {name: f(base) for name, f in fs.items()}
        for s in range(0, T * m, batch_size):
            t = t_of[s : s + batch_size]
            z = grids(t)
            r = torch.arange(len(t), device=device)
            hh, ww = torch.as_tensor(h[t], device=device), torch.as_tensor(w[t], device=device)
            z[r, :, hh, ww] = torch.as_tensor(x_nodes[node[s : s + batch_size]], device=device, dtype=dtype)
            y = run(z)
            for name, f in fs.items():
                diff = f(y) - base[name][torch.as_tensor(t, device=device)]
                out[name][s : s + len(t)] = torch.linalg.vector_norm(diff.double(), dim=1).cpu().numpy()
    out = {name: d.reshape(T, m) for name, d in out.items()}
    return out[None] if targets is None else out


def bernoulli_hellinger_features(p):
    """(√p, √(1 − p)) of Bernoulli means p (B, P): their Euclidean distance is √2 × the Hellinger
    distance of the two product-Bernoulli images, whose local form is the Fisher–Rao metric (up to a
    factor 4): the finite-distance target that the `fisher` metric approximates, as the mean image's
    L2 distance is the one the `riemannian` metric approximates."""
    p = p.clamp(0, 1)
    return torch.cat([p.sqrt(), (1 - p).sqrt()], dim=1)


def metric_codes(x, metrics, codebook, m=1, *, batch=1024):
    """The ``m`` codes nearest to each cell under its own pull-back metric, best first.

    Parameters
    ----------
    x : (M, C) array, the cells; metrics : (M, C, C) array, G(x) of each cell (symmetric,
        positive semi-definite); codebook : (K, C) array; m : int, 1 <= m <= K.

    Returns
    -------
    codes : (M, m) int64, the codes in increasing order of q = (c − x)ᵀ G(x) (c − x), ties to the
        lower code id; q : (M, m) float64, those values (computed in float64 from the differences,
        so that codes that are far apart in Euclidean terms but close under G keep their order).
    """
    x = np.asarray(x, dtype=np.float64)
    metrics = np.asarray(metrics, dtype=np.float64)
    codebook = np.asarray(codebook, dtype=np.float64)
    if x.ndim != 2 or codebook.ndim != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"x {x.shape} and codebook {codebook.shape} must be (M, C) and (K, C)")
    M, C = x.shape
    K = len(codebook)
    if metrics.shape != (M, C, C):
        raise ValueError(f"metrics: expected shape {(M, C, C)}, got {metrics.shape}")
    if not 1 <= m <= K:
        raise ValueError(f"m={m} must lie in [1, K={K}]")
    codes = np.empty((M, m), dtype=np.int64)
    q = np.empty((M, m), dtype=np.float64)
    for s in range(0, M, batch):
        d = codebook[None, :, :] - x[s : s + batch, None, :]  # (b, K, C)
        qb = np.maximum(np.einsum("bkc,bkc->bk", d @ metrics[s : s + batch], d), 0.0)
        order = np.argsort(qb, axis=1, kind="stable")[:, :m]
        codes[s : s + batch] = order
        q[s : s + batch] = np.take_along_axis(qb, order, axis=1)
    return codes, q


# metric kind -> the image features whose Euclidean distance is its finite form (None: the mean
# images themselves): the mean image's L2 for "riemannian" (its local form is JᵀJ), the Bernoulli
# Hellinger distance for "fisher" (its local form is the Fisher–Rao metric, up to a factor 4)
IMAGE_FEATURES = {"riemannian": None, "fisher": bernoulli_hellinger_features}


def decode_codes(decode, Z, cells, codebook, candidates, *, kind="riemannian", batch_size=1024, device=None):
    """Of each cell's candidate codes, the one whose decoded image is closest to the continuous one.

    decode: the decoder's mean image (as for `image_distances`); Z (Nimg, C, H, W) the continuous
    grids; cells (T,) flat cell ids n*H*W + h*W + w; codebook (K, C); candidates (T, m) code ids
    (e.g. `metric_codes`' codes, best first); kind: the pull-back metric kind whose image distance
    decides (`IMAGE_FEATURES`). Returns codes (T,) int64 and their image distances (T,) float64;
    ties go to the earlier candidate. With m = K candidates this is the exhaustive search.
    """
    if kind not in IMAGE_FEATURES:
        raise ValueError(f"kind={kind!r} must be one of {list(IMAGE_FEATURES)}")
    candidates = _check_pools(candidates, len(codebook))
    f = IMAGE_FEATURES[kind]
    targets = None if f is None else {kind: f}
    D = image_distances(decode, Z, cells, codebook, candidates, batch_size=batch_size, device=device, targets=targets)
    D = D if f is None else D[kind]
    j = np.argmin(D, axis=1)
    rows = np.arange(len(j))
    return candidates[rows, j], D[rows, j]
