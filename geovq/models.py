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
        x = self.stem(z)
        if not self.training:  # eval mode: the modules as they are (what geovq.jvp traces and rewrites)
            return self.stages(x)
        for stage in self.stages:
            mods = list(stage)
            if len(mods) >= 2 and upsample_conv_fuses(mods[0], mods[1], x.shape[-2:]):
                x, mods = upsample2x_conv3x3(x, mods[1]), mods[2:]
            for m in mods:
                x = m(x)
        return x


_PHASE_TAPS = {}  # (device, dtype) -> the (2, 3, 3) table of _phase_taps, built once per device


def _phase_taps(like):
    """taps[p, k, d] = 1 where output phase p of a nearest 2x upsample followed by a 3x3 conv reads,
    through the conv's kernel row d (offset d - 1), row k - 1 of the small map: phase 0 rows
    {i-1: d=0, i: d=1, 2}, phase 1 rows {i: d=0, 1, i+1: d=2} (columns alike). On ``like``'s device
    and dtype, kept there: no host-to-device copy per training step."""
    key = (like.device, like.dtype)
    if key not in _PHASE_TAPS:
        taps = torch.zeros(2, 3, 3)
        for p in range(2):
            for d in range(3):
                taps[p, (p + d - 1) // 2 + 1, d] = 1.0
        _PHASE_TAPS[key] = taps.to(like)
    return _PHASE_TAPS[key]


def upsample_conv_fuses(up, conv, hw) -> bool:
    """Whether ``conv(up(x))`` for an ``x`` of spatial size ``hw`` is a nearest 2x upsample and a
    3x3, stride-1, zero-padded conv (what :func:`upsample2x_conv3x3` computes)."""
    return (
        isinstance(up, nn.Upsample)
        and up.mode == "nearest"
        and up.size is not None
        and tuple(up.size if isinstance(up.size, (tuple, list)) else (up.size, up.size)) == (2 * hw[0], 2 * hw[1])
        and type(conv) is nn.Conv2d
        and is_conv3x3_same(conv)
    )


def is_conv3x3_same(conv) -> bool:
    """Whether Conv2d ``conv`` is 3x3, stride 1, zero-padded by 1, undilated and ungrouped: the conv
    that a nearest-2x upsample before it can be folded into (here and in geovq.jvp)."""
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def upsample2x_conv3x3(x, conv):
    """``conv(nearest-2x-upsample(x))`` without the upsampled map, differentiable in conv's weights:
    one 3x3 conv on the small map with 4x the output channels, phase-major (a, b, o), whose kernels
    are sums of conv's taps (_phase_taps), then each output pixel (2i + a, 2j + b) taken from phase
    (a, b). The same function; the sums run in another order, so the last float digits differ. On
    one CPU thread a training step of the default spatial VAE takes 0.64x as long with it, the
    VQ-VAE's 0.76x (benchmarks/README.md, bench_train.py)."""
    w = conv.weight
    taps = _phase_taps(w)
    out, cin = w.shape[:2]
    kernel = torch.einsum("aky,blx,oiyx->aboikl", taps, taps, w).reshape(4 * out, cin, 3, 3)
    bias = conv.bias.repeat(4) if conv.bias is not None else None
    y = F.conv2d(x, kernel.contiguous(memory_format=torch.channels_last), bias, 1, 1)
    n, _, h, wd = y.shape
    t = y.permute(0, 2, 3, 1).reshape(n, h, wd, 2, 2, out)
    return t.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * wd, out).permute(0, 3, 1, 2)


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
