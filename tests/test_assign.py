"""The assignment rules of geovq.assign against independent oracles: brute force over every code
with a linear decoder (constant metric G = AᵀA, where the metric rule is exact and equals the
decoded-image nearest code), reverse-mode Jacobians of a small nonlinear decoder, and exhaustive
decoding of every code."""

import numpy as np
import pytest
import torch
from torch import nn

from geovq.assign import bernoulli_hellinger_features, decode_codes, metric_codes
from geovq.riemann import cell_metrics, pullback
from test_fisher import oracle_metrics, small_spatial_vae

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


class LinearGridDecoder(nn.Module):
    """image = A vec(z) + b: a (C, H, W) grid to a 1x6x6 image, linear in every cell."""

    def __init__(self, C=3, H=2, W=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.shape = (C, H, W)
        self.lin = nn.Linear(C * H * W, 36)

    def forward(self, z):
        return self.lin(z.flatten(1)).view(-1, 1, 6, 6)


def cell_block(dec, h, w):
    """A_cell (P, C): the columns of A that multiply cell (h, w) of the grid."""
    C, H, W = dec.shape
    cols = [c * H * W + h * W + w for c in range(C)]
    return dec.lin.weight.detach().double().numpy()[:, cols]


def test_metric_rule_on_a_linear_decoder_is_the_exact_nearest_decoded_image():
    dec = LinearGridDecoder().eval()
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)
    codebook = rng.normal(size=(40, 3)).astype(np.float32)
    cells = np.arange(5 * 4)
    G = cell_metrics(dec, Z, cells)
    x = Z.transpose(0, 2, 3, 1).reshape(-1, 3)
    codes, q = metric_codes(x, G, codebook, m=40)
    for t, cell in enumerate(cells):
        n, hw = divmod(int(cell), 4)
        A = cell_block(dec, *divmod(hw, 2))
        brute = np.linalg.norm((codebook.astype(np.float64) - x[t]) @ A.T, axis=1) ** 2
        np.testing.assert_array_equal(codes[t], np.argsort(brute, kind="stable"))
        np.testing.assert_allclose(q[t], np.sort(brute), rtol=1e-4, atol=1e-6)
    # with a linear decoder the image change is exactly A (c - x): decode (exhaustive) agrees
    with torch.no_grad():
        dcodes, dist = decode_codes(dec, Z, cells, codebook, codes)
    np.testing.assert_array_equal(dcodes, codes[:, 0])
    np.testing.assert_allclose(dist, np.sqrt(q[:, 0]), rtol=1e-4)


@pytest.mark.parametrize("kind", ["riemannian", "fisher"])
def test_metric_rule_with_a_nonlinear_decoder_against_reverse_mode_jacobians(kind):
    vae = small_spatial_vae()
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    cells = np.arange(16)
    decode, weight = pullback(vae, kind)
    G = cell_metrics(decode, Z, cells, weight=weight)
    G_ref = oracle_metrics(vae, Z, cells, kind)
    codebook = rng.normal(size=(64, 3)).astype(np.float32)
    x = Z.transpose(0, 2, 3, 1).reshape(-1, 3)
    codes, q = metric_codes(x, G, codebook, m=5)
    ref_codes, ref_q = metric_codes(x, G_ref, codebook, m=5)
    np.testing.assert_array_equal(codes[:, 0], ref_codes[:, 0])
    np.testing.assert_allclose(q, ref_q, rtol=1e-3, atol=1e-8)


def exhaustive(decode, Z, cells, codebook, features=None):
    """For each cell, the code whose decoded image (cell replaced, others continuous) is nearest to
    the continuous decode, by decoding every code one by one (the oracle of decode_codes)."""
    f = features or (lambda y: y)
    _, _, H, W = Z.shape
    out = []
    with torch.no_grad():
        for cell in cells:
            n, hw = divmod(int(cell), H * W)
            h, w = divmod(hw, W)
            base = f(decode(torch.as_tensor(Z[n : n + 1])).flatten(1))
            z = torch.as_tensor(Z[n]).repeat(len(codebook), 1, 1, 1)
            z[:, :, h, w] = torch.as_tensor(codebook)
            d = torch.linalg.vector_norm((f(decode(z).flatten(1)) - base).double(), dim=1)
            out.append(int(torch.argmin(d)))
    return np.array(out)


@pytest.mark.parametrize("kind", ["riemannian", "fisher"])
def test_decode_with_m_equal_K_is_the_exhaustive_search_and_with_m_1_the_metric(kind):
    vae = small_spatial_vae(seed=3)
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    cells = np.arange(12)
    codebook = rng.normal(size=(24, 3)).astype(np.float32)
    decode, weight = pullback(vae, kind)
    G = cell_metrics(decode, Z, cells, weight=weight)
    x = Z.transpose(0, 2, 3, 1).reshape(-1, 3)
    all_codes, _ = metric_codes(x, G, codebook, m=len(codebook))
    got, _ = decode_codes(vae.decode, Z, cells, codebook, all_codes, kind=kind, batch_size=7)
    feats = bernoulli_hellinger_features if kind == "fisher" else None
    np.testing.assert_array_equal(got, exhaustive(vae.decode, Z, cells, codebook, feats))
    one, _ = decode_codes(vae.decode, Z, cells, codebook, all_codes[:, :1], kind=kind)
    np.testing.assert_array_equal(one, all_codes[:, 0])
    # the candidates are searched, not the whole codebook: the best of the metric's top 3 only
    top3, _ = decode_codes(vae.decode, Z, cells, codebook, all_codes[:, :3], kind=kind)
    assert all(c in row for c, row in zip(top3, all_codes[:, :3]))


def test_metric_codes_rejects_bad_shapes():
    x, G, cb = np.zeros((4, 3)), np.zeros((4, 3, 3)), np.zeros((5, 3))
    with pytest.raises(ValueError, match="metrics"):
        metric_codes(x, G[:3], cb)
    with pytest.raises(ValueError, match="codebook"):
        metric_codes(x, G, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="m=6"):
        metric_codes(x, G, cb, m=6)
    with pytest.raises(ValueError, match="kind"):
        decode_codes(None, np.zeros((1, 3, 1, 1)), [0], cb, np.zeros((1, 1), int), kind="euclid")
