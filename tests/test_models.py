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


@pytest.mark.parametrize(
    "shape,grid,channels,fused",
    # 28 -> 14 -> 7 -> 4: the 4 -> 7 stage does not double (plain modules), 7 -> 14 and 14 -> 28 do;
    # 32 -> 16 -> 8 -> 4: every stage doubles; 16 -> 8 -> 4 with 3 image channels
    [((1, 28, 28), 4, [16, 32, 32], 2), ((3, 32, 32), 4, [8, 8, 8], 3), ((3, 16, 16), 4, [4, 6], 2)],
)
def test_training_decoder_fuses_upsample_and_conv_into_the_same_function(shape, grid, channels, fused, monkeypatch):
    """In training mode the decoder computes each nearest-2x upsample + 3x3 conv as one conv on the small
    map (geovq.models.upsample2x_conv3x3): the same outputs and weight gradients as the modules up to
    float rounding; in eval mode (what geovq.jvp traces) it runs the modules as they are, bit for bit."""
    import copy

    import geovq.models

    calls = []
    real = geovq.models.upsample2x_conv3x3
    monkeypatch.setattr(geovq.models, "upsample2x_conv3x3", lambda x, conv: calls.append(x.shape) or real(x, conv))
    torch.manual_seed(0)
    dec = SpatialVAE(shape, latent_channels=5, grid=grid, channels=channels).decoder.train()
    ref = copy.deepcopy(dec)
    z = torch.randn(6, 5, grid, grid)
    y, y_ref = dec(z), ref.stages(ref.stem(z))
    assert len(calls) == fused  # the doubling stages, and only those, took the fused path
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    # a conv bias right before BatchNorm has a zero gradient in exact arithmetic, only rounding noise:
    # absolute agreement on the scale of the largest gradient
    scale = max(float(p.grad.abs().max()) for p in ref.parameters())
    for (name, a), b in zip(dec.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    ref.load_state_dict(dec.state_dict())  # the BatchNorm running statistics saw rounding noise too
    dec.eval(), ref.eval()
    calls.clear()
    with torch.no_grad():
        assert torch.equal(dec(z), ref.stages(ref.stem(z))) and not calls


def test_upsample2x_conv3x3_against_the_modules_at_the_borders():
    """Every output pixel, borders included, against F.interpolate + F.conv2d, for weights with one tap each."""
    import torch.nn.functional as F
    from torch import nn

    from geovq.models import upsample2x_conv3x3, upsample_conv_fuses

    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    conv = nn.Conv2d(3, 2, 3, padding=1).double()
    up = nn.Upsample(size=(10, 8), mode="nearest")
    assert upsample_conv_fuses(up, conv, (5, 4)) and not upsample_conv_fuses(up, conv, (5, 5))
    assert not upsample_conv_fuses(nn.Upsample(size=(10, 8), mode="bilinear"), conv, (5, 4))
    assert not upsample_conv_fuses(up, nn.Conv2d(3, 2, 3, padding=0), (5, 4))
    for tap in range(9):
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight.view(2, 3, 9)[:, :, tap] = torch.randn(2, 3, dtype=torch.float64)
        want = F.conv2d(F.interpolate(x, size=(10, 8), mode="nearest"), conv.weight, conv.bias, padding=1)
        torch.testing.assert_close(upsample2x_conv3x3(x, conv), want, rtol=1e-12, atol=1e-12)
