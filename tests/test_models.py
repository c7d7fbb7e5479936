"""VAE shapes and the ELBO pieces against hand-computed values."""

import math

import pytest
import torch

from geovq.models import SpatialVAE, VanillaVAE, build_vae, elbo_terms, grid_sizes


@pytest.mark.parametrize(
    "shape,grid,channels",
    [((1, 28, 28), 4, [8, 8, 8]), ((1, 28, 28), 7, [8, 8]), ((3, 32, 32), 4, [8, 8, 8]), ((1, 16, 16), 4, [4, 4])],
)
def test_spatial_shapes(shape, grid, channels):
    m = SpatialVAE(shape, latent_channels=5, grid=grid, channels=channels).eval()
    x = torch.rand(3, *shape)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, 5, grid, grid) == (3, *m.latent_shape)
    out = m.decode(mu)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    logits, mu2, _ = m(x)
    assert logits.shape == x.shape and torch.equal(mu, mu2)  # eval mode: z = mu


def test_vanilla_shapes_and_grid_view():
    m = VanillaVAE((3, 32, 32), latent_dim=6, hidden=32)
    mu, logvar = m.encode(torch.rand(2, 3, 32, 32))
    assert mu.shape == (2, 6, 1, 1) and m.latent_shape == (6, 1, 1)
    assert m.decode(mu).shape == (2, 3, 32, 32)


def test_grid_sizes_and_errors():
    assert grid_sizes(28, 4) == [28, 14, 7, 4]
    assert grid_sizes(32, 8) == [32, 16, 8]
    with pytest.raises(ValueError, match="not reachable"):
        grid_sizes(28, 5)
    with pytest.raises(ValueError, match="channels has 1 entries"):
        build_vae("spatial", (1, 28, 28), {"latent_channels": 2, "grid": 4, "channels": [8]})
    with pytest.raises(ValueError, match="unknown VAE variant"):
        build_vae("resnet", (1, 28, 28), {})


def test_elbo_terms_by_hand():
    # one image of two pixels, one latent dim: every term computed by hand
    logits = torch.tensor([[0.0, 2.0]])
    x = torch.tensor([[1.0, 0.0]])
    mu = torch.tensor([[0.5]])
    logvar = torch.tensor([[math.log(2.0)]])
    recon, kl = elbo_terms(logits, x, mu, logvar)
    p = 1 / (1 + math.exp(-2.0))
    expected_recon = -math.log(0.5) - math.log(1 - p)
    expected_kl = 0.5 * (0.25 + 2.0 - 1.0 - math.log(2.0))
    assert recon.item() == pytest.approx(expected_recon, rel=1e-6)
    assert kl.item() == pytest.approx(expected_kl, rel=1e-6)


def test_kl_zero_at_prior():
    recon, kl = elbo_terms(
        torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, 3, 1, 1), torch.zeros(2, 3, 1, 1)
    )
    assert torch.allclose(kl, torch.zeros(2))
    assert torch.allclose(recon, torch.full((2,), 4 * math.log(2)))
