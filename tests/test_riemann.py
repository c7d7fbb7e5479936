"""Riemannian metrics and edge lengths against independent oracles (reverse-mode Jacobians, explicit linear maps)."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from geovq.jvp import for_jvp
from geovq.riemann import METHODS, cell_metrics, edge_lengths_from_metrics, edge_lengths_jvp, new_point_lengths

# torch's forward-mode AD scripts its jvp decompositions on first use (torch-internal)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _randomize_bn(module, seed):
    """BN running stats and affine far from (0, 1), so that eval vs train mode and folding show."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.2 + torch.rand(m.num_features, generator=g) * 3)
            m.weight.data.copy_(1 + 0.5 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(m.num_features, generator=g))


class ConvDecoder(nn.Module):
    """Small spatial decoder with BatchNorm: (B, 3, 3, 3) grid -> (B, 1, 12, 12) mean."""

    def __init__(self, c=3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c, 6, 1),
            nn.Upsample(size=(6, 6)),
            nn.Conv2d(6, 5, 3, padding=1),
            nn.BatchNorm2d(5),
            nn.ReLU(),
            nn.Upsample(size=(12, 12)),
            nn.Conv2d(5, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.Tanh(),
            nn.Conv2d(4, 1, 3, padding=1),
            nn.Sigmoid(),
        )
        _randomize_bn(self, seed=1)

    def forward(self, z):
        return self.net(z)


class MLPVAE(nn.Module):
    """Vanilla decoder on a (D, 1, 1) grid, exposed as a `decode` method like geovq.models."""

    def __init__(self, d=5, hidden=16, n_pix=20):
        super().__init__()
        self.decoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.Softplus(), nn.Linear(hidden, n_pix))
        self.modes_seen = []

    def decode(self, z):
        self.modes_seen.append(self.training)
        return torch.sigmoid(self.decoder(z).view(z.shape[0], 1, 4, 5))


class LinearDecoder(nn.Module):
    """x = A vec(Z): every cell's Jacobian is a fixed column block of A."""

    def __init__(self, A, grid):
        super().__init__()
        self.A = nn.Parameter(torch.as_tensor(A), requires_grad=False)
        self.grid = grid

    def forward(self, z):
        return (z.flatten(1) @ self.A.T).view(z.shape[0], 1, -1, 1)


def _oracle_metrics(decode, Z, cells):
    """JᵀJ from reverse-mode torch.autograd.functional.jacobian of a whole image, sliced to the cell."""
    Z = torch.as_tensor(Z, dtype=torch.float64)
    _, C, H, W = Z.shape
    jac = {}
    out = []
    for cell in cells:
        n, hw = divmod(int(cell), H * W)
        h, w = divmod(hw, W)
        if n not in jac:
            jac[n] = torch.autograd.functional.jacobian(
                lambda z: decode(z[None]).reshape(-1), Z[n], vectorize=True
            )  # (P, C, H, W)
        J = jac[n][:, :, h, w]
        out.append((J.T @ J).numpy())
    return np.stack(out)


def _rel_err(a, b):
    """Largest per-matrix error relative to the matrix's norm."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    axes = tuple(range(1, a.ndim))
    return float(np.max(np.sqrt(((a - b) ** 2).sum(axes)) / np.sqrt((b**2).sum(axes))))


@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(0)
    dec = ConvDecoder().eval()
    Z = np.random.default_rng(0).normal(size=(5, 3, 3, 3)).astype(np.float32)
    return dec, Z


@pytest.fixture(scope="module")
def conv_oracle(conv):
    dec, Z = conv
    cells = np.arange(Z.shape[0] * 9)
    dec64 = copy.deepcopy(dec).double().eval()
    return cells, _oracle_metrics(dec64, Z, cells)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channels_last", [True, False])
def test_cell_metrics_conv_matches_reverse_mode_jacobian(conv, conv_oracle, method, channels_last):
    dec, Z = conv
    cells, G_ref = conv_oracle
    # out-of-order, repeated cells and a batch size that leaves a partial chunk
    order = np.r_[cells[::-1], cells[:4]]
    G = cell_metrics(dec, Z, order, batch_size=7, method=method, channels_last=channels_last)
    assert G.shape == (len(order), 3, 3) and G.dtype == np.float32
    assert _rel_err(G, G_ref[order]) < 1e-5
    assert np.array_equal(G, G.transpose(0, 2, 1))


def test_cell_metrics_float64_is_tighter(conv, conv_oracle):
    dec, Z = conv
    cells, G_ref = conv_oracle
    G = cell_metrics(copy.deepcopy(dec).double(), Z, cells, dtype=torch.float64)
    assert _rel_err(G, G_ref) < 3e-7  # float32 rounding of the output only


def _median_rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.median(np.sqrt(((a - b) ** 2).sum((1, 2)) / (b**2).sum((1, 2)))))


@pytest.mark.parametrize("method", ["stacked", "vmap_jvp"])
def test_cell_metrics_bfloat16_route(conv, conv_oracle, method):
    """precision="bfloat16": the decoder runs on a bfloat16 copy (the given one untouched), G comes
    back float32 and symmetric, off the float64 oracle by bfloat16's rounding (~2^-8), not by
    float32's; a bound decode method (vanilla VAE) is cast with its module."""
    dec, Z = conv
    cells, G_ref = conv_oracle
    G = cell_metrics(dec, Z, cells, batch_size=7, method=method, precision="bfloat16")
    assert G.dtype == np.float32 and np.array_equal(G, G.transpose(0, 2, 1))
    assert 1e-4 < _median_rel_err(G, G_ref) < 3e-2
    assert all(p.dtype == torch.float32 for p in dec.parameters())
    np.testing.assert_array_equal(G, cell_metrics(dec, Z, cells, method=method, precision="bfloat16"))
    np.testing.assert_array_equal(
        cell_metrics(dec, Z, cells, method=method, precision="float32"), cell_metrics(dec, Z, cells, method=method)
    )

    torch.manual_seed(2)
    vae = MLPVAE().eval()
    Zv = np.random.default_rng(2).normal(size=(40, 5, 1, 1)).astype(np.float32)
    G_ref = _oracle_metrics(copy.deepcopy(vae).double().decode, Zv, np.arange(40))
    G = cell_metrics(vae.decode, Zv, np.arange(40), method=method, precision="bfloat16")
    assert 1e-4 < _median_rel_err(G, G_ref) < 3e-2
    with pytest.raises(ValueError, match="precision='float16' must be one of"):
        cell_metrics(dec, Z, cells, precision="float16")


def test_bfloat16_through_phase_convs():
    """The spatial decoder's upsample + conv pairs as phase convs (chained 2 -> 4 where narrow),
    built again for the bfloat16 copy (geovq.jvp._UpsampleConv.phase_conv): the route's error is
    bfloat16's (~2^-8), also through the chained phases."""
    from geovq.models import SpatialVAE

    torch.manual_seed(3)
    vae = SpatialVAE((1, 16, 16), latent_channels=3, grid=2, channels=(4, 6, 5))
    _randomize_bn(vae, seed=3)
    vae.eval()
    Z = np.random.default_rng(3).normal(size=(6, 3, 2, 2)).astype(np.float32)
    cells = np.arange(24)
    G_ref = _oracle_metrics(copy.deepcopy(vae).double().decode, Z, cells)
    G = cell_metrics(vae.decode, Z, cells, method="stacked", precision="bfloat16")
    assert 1e-4 < _median_rel_err(G, G_ref) < 3e-2


@pytest.mark.parametrize("method", METHODS)
def test_cell_metrics_mlp_bound_method(method):
    torch.manual_seed(1)
    vae = MLPVAE().double().train()
    Z = np.random.default_rng(1).normal(size=(9, 5, 1, 1))
    cells = np.arange(9)
    G = cell_metrics(vae.decode, Z, cells, batch_size=4, dtype=torch.float64, method=method)
    assert vae.training and vae.modes_seen and not any(vae.modes_seen)  # eval inside, restored after
    assert _rel_err(G, _oracle_metrics(vae.decode, Z, cells)) < 1e-6


def test_eval_mode_used_and_restored(conv):
    dec, Z = conv
    cells = np.arange(10)
    G_eval = cell_metrics(dec, Z, cells)
    dec.train()
    dec.net[3].eval()  # a submodule deliberately kept in eval must stay so
    stats = [b.clone() for b in dec.buffers()]
    try:
        G_train = cell_metrics(dec, Z, cells)
        L_train = edge_lengths_jvp(dec, Z, cells[:5], cells[5:], np.ones((5, 3)), np.zeros((5, 3)))
        assert dec.training and dec.net[7].training and not dec.net[3].training
        assert all(torch.equal(a, b) for a, b in zip(stats, dec.buffers()))  # no BN stat update
        assert all(p.grad is None for p in dec.parameters())
    finally:
        dec.eval()
    np.testing.assert_array_equal(G_train, G_eval)
    L_eval = edge_lengths_jvp(dec, Z, cells[:5], cells[5:], np.ones((5, 3)), np.zeros((5, 3)))
    np.testing.assert_array_equal(L_train, L_eval)
    # train-mode BN would give another image (and so another J): the test can tell the modes apart
    probe = copy.deepcopy(dec)  # a train-mode forward updates running stats; keep the fixture's
    z = torch.as_tensor(Z[:2])
    with torch.no_grad():
        assert not torch.allclose(probe.train()(z), probe.eval()(z))


@pytest.mark.parametrize("grid,image,channels", [(4, 28, (4, 6, 5)), (7, 28, (4, 6)), (2, 16, (4, 6, 5))])
def test_for_jvp_is_the_same_decoder(grid, image, channels):
    """The pipeline's spatial decoder rewritten for forward-mode AD (BN folded, 2x upsample + conv
    as one conv + pixel_shuffle; 4 -> 7 is not 2x and keeps the original pair): the same images,
    and metrics equal to reverse-mode Jacobians of the original model."""
    from geovq.models import SpatialVAE

    torch.manual_seed(grid)
    vae = SpatialVAE((1, image, image), latent_channels=3, grid=grid, channels=channels)
    _randomize_bn(vae, seed=3)
    vae.train()
    fast = for_jvp(vae.decode)
    rewritten = fast.__self__
    kinds = [type(m).__name__ for m in rewritten.decoder.modules()]
    assert "BatchNorm2d" not in kinds and "_UpsampleConv" in kinds
    assert vae.training and any(isinstance(m, nn.BatchNorm2d) for m in vae.modules())  # original untouched
    vae.eval()
    Z = torch.randn(6, 3, grid, grid)
    with torch.no_grad():
        torch.testing.assert_close(fast(Z), vae.decode(Z), rtol=0, atol=2e-6)
    cells = np.arange(2 * grid * grid)
    G_fast = cell_metrics(vae.decode, Z.numpy(), cells, batch_size=5)
    G_plain = cell_metrics(vae.decode, Z.numpy(), cells, batch_size=5, fuse=False)
    G_ref = _oracle_metrics(copy.deepcopy(vae).double().decode, Z.numpy(), cells)
    assert _rel_err(G_fast, G_ref) < 1e-5 and _rel_err(G_plain, G_ref) < 1e-5


def test_for_jvp_leaves_other_decoders_alone():
    vae = MLPVAE()
    assert for_jvp(vae.decode) == vae.decode  # nothing to rewrite: no copy
    up3 = nn.Sequential(nn.Upsample(scale_factor=3), nn.Conv2d(2, 2, 3, padding=1))  # not 2x
    assert for_jvp(up3) is up3
    up2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 3, 3, padding=1), nn.Softplus())
    fast = for_jvp(up2)
    x = torch.randn(2, 2, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), up2(x), rtol=0, atol=1e-6)


def test_linear_decoder_lengths_exact():
    rng = np.random.default_rng(2)
    C, H, W, n_img = 4, 2, 3, 6
    A = rng.normal(size=(30, C * H * W))
    dec = LinearDecoder(A, (C, H, W))
    Z = rng.normal(size=(n_img, C, H, W))
    M = n_img * H * W
    x = Z.transpose(0, 2, 3, 1).reshape(M, C)  # cell rows in flat-id order
    pos = np.arange(M) % (H * W)
    blocks = A.reshape(30, C, H * W).transpose(2, 0, 1)  # (H*W, P, C): J of the cell at each position

    G = cell_metrics(dec, Z, np.arange(M), dtype=torch.float64)
    np.testing.assert_allclose(G, np.einsum("mpc,mpd->mcd", blocks[pos], blocks[pos]), rtol=1e-6)

    i, j = rng.integers(0, M, 50), rng.integers(0, M, 50)
    delta = x[j] - x[i]
    expect = 0.5 * (
        np.linalg.norm(np.einsum("epc,ec->ep", blocks[pos[i]], delta), axis=1)
        + np.linalg.norm(np.einsum("epc,ec->ep", blocks[pos[j]], delta), axis=1)
    )
    L_jvp = edge_lengths_jvp(dec, Z, i, j, x[i], x[j], batch_size=16, dtype=torch.float64)
    np.testing.assert_allclose(L_jvp, expect, rtol=1e-12)
    # same grid position: both endpoints share J and L = |A_cell Δ| exactly
    same = pos[i] == pos[j]
    assert same.any()
    np.testing.assert_allclose(
        L_jvp[same], np.linalg.norm(np.einsum("epc,ec->ep", blocks[pos[i[same]]], delta[same]), axis=1), rtol=1e-12
    )

    graph = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(M, M))
    graph = ((graph + graph.T) > 0).astype(np.float64)
    L = edge_lengths_from_metrics(graph, x, G)
    off = i != j
    np.testing.assert_allclose(np.asarray(L[i[off], j[off]]).ravel(), expect[off], rtol=1e-6)


def _knn_csr(x, k):
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nbr = np.argsort(d2, axis=1)[:, :k]
    A = sp.csr_matrix((np.ones(nbr.size), (np.repeat(np.arange(len(x)), k), nbr.ravel())), shape=(len(x),) * 2)
    return sp.csr_matrix(A.maximum(A.T)), nbr


def test_metrics_path_matches_jvp_path(conv):
    dec, Z = conv
    M = Z.shape[0] * 9
    x = Z.transpose(0, 2, 3, 1).reshape(M, 3)
    graph, _ = _knn_csr(x, 5)
    metrics = cell_metrics(dec, Z, np.arange(M))
    L = edge_lengths_from_metrics(graph, x, metrics, chunk=17)
    assert np.array_equal(L.indptr, graph.indptr) and np.array_equal(L.indices, graph.indices)
    assert (L != L.T).nnz == 0  # exactly symmetric
    assert (L.data > 0).all()
    coo = L.tocoo()
    L_jvp = edge_lengths_jvp(dec, Z, coo.row, coo.col, x[coo.row], x[coo.col], batch_size=13)
    np.testing.assert_allclose(coo.data, L_jvp, rtol=2e-5)


def test_duplicate_points_get_positive_floor():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    metrics = np.broadcast_to(np.eye(2), (4, 2, 2)).astype(np.float32)
    graph = sp.csr_matrix(np.ones((4, 4)) - np.eye(4))
    L = edge_lengths_from_metrics(graph, x, metrics)
    assert L.nnz == graph.nnz and 0 < L[0, 1] < 1e-9
    assert L[0, 2] == 1.0 and L[0, 3] == 2.0
    L = edge_lengths_from_metrics(graph, x, metrics, min_length=0.5)
    assert L[0, 1] == 0.5


def test_new_point_lengths_match_direct_per_pair():
    rng = np.random.default_rng(3)
    N, M, C, k = 40, 7, 3, 4
    B = rng.normal(size=(N + M, C, C))
    metrics = (B @ B.transpose(0, 2, 1)).astype(np.float32)
    x = rng.normal(size=(N + M, C))
    nbr = rng.integers(0, N, (M, k))
    L = new_point_lengths(metrics[N:], x[N:], metrics[:N], x[:N], nbr, chunk=5)
    expect = np.empty((M, k))
    for m in range(M):
        for t in range(k):
            d = x[nbr[m, t]] - x[N + m]
            expect[m, t] = 0.5 * (
                np.sqrt(d @ metrics[N + m].astype(float) @ d) + np.sqrt(d @ metrics[nbr[m, t]].astype(float) @ d)
            )
    assert L.dtype == np.float64 and L.shape == (M, k)
    np.testing.assert_allclose(L, expect, rtol=1e-5)  # dᵀGd is evaluated in float32, like the stored G
    one_sided = new_point_lengths(None, x[N:], metrics[:N], x[:N], nbr, chunk=5)
    for m in range(M):
        for t in range(k):
            d = x[nbr[m, t]] - x[N + m]
            expect[m, t] = np.sqrt(d @ metrics[nbr[m, t]].astype(float) @ d)
    np.testing.assert_allclose(one_sided, expect, rtol=1e-5)


def test_new_points_agree_with_graph_edges(conv):
    """A node treated as a new point gets the same lengths as its stored graph edges."""
    dec, Z = conv
    M = Z.shape[0] * 9
    x = Z.transpose(0, 2, 3, 1).reshape(M, 3)
    graph, nbr = _knn_csr(x, 4)
    metrics = cell_metrics(dec, Z, np.arange(M))
    L = edge_lengths_from_metrics(graph, x, metrics)
    L_new = new_point_lengths(metrics, x, metrics, x, nbr)
    np.testing.assert_allclose(L_new, np.take_along_axis(L.toarray(), nbr, 1), rtol=1e-12)


def test_rejects_bad_inputs(conv):
    dec, Z = conv
    with pytest.raises(ValueError, match="cells"):
        cell_metrics(dec, Z, np.array([Z.shape[0] * 9]))
    with pytest.raises(ValueError, match="method"):
        cell_metrics(dec, Z, np.arange(3), method="nope")
    with pytest.raises(ValueError, match="Z"):
        cell_metrics(dec, Z[0], np.arange(3))
