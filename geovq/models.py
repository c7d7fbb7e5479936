"""VAE models: a vanilla MLP VAE (flat latent) and a spatial conv VAE (latent grid).

Both expose the same interface so that every later stage treats latents as grids:
``encode(x) -> (mu, logvar)`` with shape (B, C, H, W) (the vanilla VAE's flat latent
is a (D, 1, 1) grid), ``decode_logits(z)`` and ``decode(z)`` (the Bernoulli mean in
[0, 1]), and ``latent_shape``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def grid_sizes(image_size: int, grid: int) -> list[int]:
    """Spatial sizes from the image down to the latent grid, halving (ceil) each stage."""
    if grid > image_size:
        raise ValueError(f"grid={grid} must be <= image size {image_size}")
    sizes = [image_size]
    while sizes[-1] > grid:
        sizes.append(math.ceil(sizes[-1] / 2))
    if sizes[-1] != grid:
        raise ValueError(
            f"grid={grid} is not reachable from image size {image_size} by halving "
            f"(sizes {sizes}); choose one of {sizes}"
        )
    return sizes


class VanillaVAE(nn.Module):
    """MLP encoder/decoder with a flat D-dimensional latent, stored as a (D, 1, 1) grid."""

    def __init__(self, image_shape, latent_dim: int = 16, hidden: int = 512):
        super().__init__()
        self.image_shape = tuple(image_shape)
        n_pix = math.prod(self.image_shape)
        self.latent_shape = (latent_dim, 1, 1)
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(n_pix, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.to_mu = nn.Linear(hidden, latent_dim)
        self.to_logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_pix),
        )

    def encode(self, x):
        h = self.encoder(x)
        shape = (x.shape[0], *self.latent_shape)
        return self.to_mu(h).view(shape), self.to_logvar(h).view(shape)

    def decode_logits(self, z):
        return self.decoder(z).view(z.shape[0], *self.image_shape)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x):
        return vae_forward(self, x)


def _conv_block(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]


class ConvEncoder(nn.Module):
    """Stride-2 conv stages from the image down to the latent grid; outputs ``out_channels``."""

    def __init__(self, in_channels, channels, sizes, out_channels):
        super().__init__()
        if len(channels) != len(sizes) - 1:
            raise ValueError(
                f"channels has {len(channels)} entries but image {sizes[0]} -> grid {sizes[-1]} "
                f"needs {len(sizes) - 1} (one per halving: {sizes})"
            )
        layers, cin = [], in_channels
        for c in channels:
            layers += _conv_block(cin, c, 2)
            cin = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, out_channels, 1)

    def forward(self, x):
        return self.head(self.body(x))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: nearest upsampling to each stage size, then conv3x3 + BN + ReLU."""

    def __init__(self, latent_channels, channels, sizes, out_channels):
        super().__init__()
        rev = list(reversed(channels))
        self.stem = nn.Conv2d(latent_channels, rev[0], 1)
        stages, cin = [], rev[0]
        up_sizes = list(reversed(sizes))[1:]  # grid -> ... -> image
        for i, size in enumerate(up_sizes):
            last = i == len(up_sizes) - 1
            block = [nn.Upsample(size=(size, size), mode="nearest")]
            if last:
                block.append(nn.Conv2d(cin, out_channels, 3, 1, 1))
            else:
                cout = rev[i + 1]
                block += _conv_block(cin, cout, 1)
                cin = cout
            stages.append(nn.Sequential(*block))
        self.stages = nn.Sequential(*stages)

    def forward(self, z):
        return self.stages(self.stem(z))


class SpatialVAE(nn.Module):
    """Conv VAE whose latent is a C x grid x grid map: one C-vector per cell."""

    def __init__(self, image_shape, latent_channels: int = 8, grid: int = 4, channels=(16, 32, 32)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        cimg, h, w = self.image_shape
        if h != w:
            raise ValueError(f"spatial VAE needs square images, got {h}x{w}")
        sizes = grid_sizes(h, grid)
        self.latent_shape = (latent_channels, grid, grid)
        self.encoder = ConvEncoder(cimg, list(channels), sizes, 2 * latent_channels)
        self.decoder = ConvDecoder(latent_channels, list(channels), sizes, cimg)

    def encode(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z):
        return self.decoder(z)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x):
        return vae_forward(self, x)


def vae_forward(model, x):
    mu, logvar = model.encode(x)
    # the noise drawn in logical (N, C, H, W) order whatever mu's memory layout (randn_like would
    # follow a channels-last layout and hand each latent another draw)
    eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device) if model.training else None
    z = mu + eps * torch.exp(0.5 * logvar) if model.training else mu
    return model.decode_logits(z), mu, logvar


def elbo_terms(logits, x, mu, logvar):
    """Per-image negative ELBO pieces in nats: Bernoulli reconstruction and Gaussian KL.

    recon = sum_pixels BCE(sigmoid(logits), x);
    kl = 0.5 * sum_latent (mu^2 + exp(logvar) - 1 - logvar).
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
    return recon, kl


VARIANTS = {"vanilla": VanillaVAE, "spatial": SpatialVAE}


def build_vae(variant: str, image_shape, params: dict) -> nn.Module:
    """Build a VAE from its config section (only the architecture keys are read)."""
    if variant == "vanilla":
        return VanillaVAE(image_shape, latent_dim=params["latent_dim"], hidden=params["hidden"])
    if variant == "spatial":
        return SpatialVAE(
            image_shape,
            latent_channels=params["latent_channels"],
            grid=params["grid"],
            channels=params["channels"],
        )
    raise ValueError(f"unknown VAE variant {variant!r}; expected one of {sorted(VARIANTS)}")
