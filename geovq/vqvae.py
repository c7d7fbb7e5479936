"""End-to-end VQ-VAE baseline: the VAE variant's encoder/decoder and grid with an EMA vector quantizer between them."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geovq.io import load_checkpoint, restore, save_checkpoint
from geovq.models import ConvDecoder, ConvEncoder, VanillaVAE, grid_sizes

VQ_KEYS = ("beta", "decay", "eps", "dead_fraction")


class VectorQuantizerEMA(nn.Module):
    """K codes of dimension C learned by exponential moving averages (van den Oord et al. 2017, app. A.1).

    Each training step: assign every encoder output to its nearest code; N_k <- d N_k + (1-d) n_k
    and m_k <- d m_k + (1-d) sum of the vectors assigned to k; the code is m_k over the
    Laplace-smoothed count (N_k + eps) / (N + K eps) * N, so an unused code never divides by 0.
    A code whose count falls below the threshold ``dead_fraction`` x the uniform share (batch
    vectors / K) is dead: it restarts at a random encoder output of the batch with twice the
    threshold as its count, so a restarted code that catches no vectors dies again within
    ln 2 / (1 - decay) steps (about 70) instead of idling. On the first training step every
    code starts this way (with the uniform share as its count if ``dead_fraction`` is 0). The
    encoder gets the straight-through gradient and the commitment term beta * ||z_e - sg(z_q)||^2.
    """

    def __init__(self, K: int, C: int, *, beta=0.25, decay=0.99, eps=1e-5, dead_fraction=0.03):
        super().__init__()
        self.K, self.C = K, C
        self.beta, self.decay, self.eps, self.dead_fraction = beta, decay, eps, dead_fraction
        self.register_buffer("embedding", torch.randn(K, C))
        self.register_buffer("ema_count", torch.zeros(K))
        self.register_buffer("ema_sum", torch.zeros(K, C))
        self.register_buffer("initialized", torch.tensor(False))
        self.restarts = 0  # codes restarted since construction (read by the training log)

    def assign(self, flat):
        """Nearest code of each row of ``flat`` (N, C)."""
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embedding.T + self.embedding.pow(2).sum(1)
        return d.argmin(1)

    def lookup(self, codes):
        """Code grids (B, H, W) -> code vectors (B, C, H, W)."""
        return self.embedding[codes].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e):
        """(z_q with straight-through gradient (B, C, H, W), codes (B, H, W), commitment per image (B,))."""
        B, C, H, W = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, C)
        if self.training and not bool(self.initialized):
            everything = torch.ones(self.K, dtype=torch.bool, device=flat.device)
            share = len(flat) / self.K
            self._restart(everything, flat, count=2 * self.dead_fraction * share if self.dead_fraction else share)
            self.initialized.fill_(True)
        codes = self.assign(flat).view(B, H, W)
        z_q = self.lookup(codes)  # the codes as they were when assigned (before this step's update)
        commitment = self.beta * (z_e - z_q).pow(2).flatten(1).sum(1)
        if self.training:
            self._ema_update(flat, codes.view(-1))
        return z_e + (z_q - z_e).detach(), codes, commitment

    @torch.no_grad()
    def _ema_update(self, flat, codes):
        counts = torch.bincount(codes, minlength=self.K).to(flat.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.K * self.eps) * n
        self.embedding.copy_(self.ema_sum / smoothed[:, None])
        threshold = self.dead_fraction * len(flat) / self.K
        dead = self.ema_count < threshold
        if dead.any():
            self._restart(dead, flat, count=2 * threshold)

    @torch.no_grad()
    def _restart(self, dead, flat, count):
        n_dead, n = int(dead.sum()), len(flat)
        if n >= n_dead:
            new = flat[torch.randperm(n, device=flat.device)[:n_dead]]
        else:  # fewer vectors than dead codes: reuse rows, jittered so the copies can split apart
            new = flat[torch.randint(n, (n_dead,), device=flat.device)]
            new = new + 0.01 * flat.std(0, keepdim=True).nan_to_num(0.0) * torch.randn_like(new)
        self.embedding[dead] = new
        self.ema_sum[dead] = new * count
        self.ema_count[dead] = count
        self.restarts += n_dead


class VQVAE(nn.Module):
    """Encoder -> (C, H, W) grid -> nearest of K codes -> decoder, with the post-hoc VAE's architecture.

    spatial: the SpatialVAE's ConvEncoder (C output channels instead of 2C) and ConvDecoder;
    vanilla: the VanillaVAE's MLP encoder and mean head, its MLP decoder, on a (D, 1, 1) grid.
    """

    def __init__(self, variant, image_shape, arch, K, vq):
        super().__init__()
        self.variant, self.image_shape = variant, tuple(image_shape)
        if variant == "spatial":
            cimg, h, w = self.image_shape
            if h != w:
                raise ValueError(f"spatial VQ-VAE needs square images, got {h}x{w}")
            C, grid, channels = arch["latent_channels"], arch["grid"], list(arch["channels"])
            sizes = grid_sizes(h, grid)
            self.latent_shape = (C, grid, grid)
            self.encoder = ConvEncoder(cimg, channels, sizes, C)
            self.decoder = ConvDecoder(C, channels, sizes, cimg)
        elif variant == "vanilla":
            vae = VanillaVAE(self.image_shape, latent_dim=arch["latent_dim"], hidden=arch["hidden"])
            self.latent_shape = vae.latent_shape
            self.encoder = nn.Sequential(vae.encoder, vae.to_mu, nn.Unflatten(1, vae.latent_shape))
            self.decoder = vae.decoder
        else:
            raise ValueError(f"unknown VQ-VAE variant {variant!r}; expected 'vanilla' or 'spatial'")
        self.vq = VectorQuantizerEMA(K, self.latent_shape[0], **{k: vq[k] for k in VQ_KEYS})

    @property
    def K(self) -> int:
        return self.vq.K

    def encode(self, x):
        """Pre-quantization encoder outputs z_e (B, C, H, W)."""
        return self.encoder(x)

    @torch.no_grad()
    def quantize(self, z_e):
        """(z_q, codes): nearest codes of z_e, without updating the codebook."""
        B, C, H, W = z_e.shape
        codes = self.vq.assign(z_e.permute(0, 2, 3, 1).reshape(-1, C)).view(B, H, W)
        return self.vq.lookup(codes), codes

    def decode_logits(self, z):
        return self.decoder(z).view(z.shape[0], *self.image_shape)

    def decode(self, z):
        """Bernoulli image means in [0, 1] of latent grids z (B, C, H, W)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x):
        """(logits of x, z_e, codes, commitment per image)."""
        z_e = self.encode(x)
        z_q, codes, commitment = self.vq(z_e)
        return self.decode_logits(z_q), z_e, codes, commitment


# ---------------------------------------------------------------- training
def _epoch(model, images, batch_size, device, opt=None, generator=None, guard=None):
    """Per-image means of the reconstruction BCE (nats) and commitment; code counts."""
    from geovq.train import Sums, batches

    sums = Sums(2, device)
    counts = torch.zeros(model.K, dtype=torch.long, device=device)
    for idx in batches(len(images), batch_size, generator, device):
        x = images[idx]
        logits, z_e, codes, commitment = model(x)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        loss = (recon + commitment).mean()
        if guard is not None:
            guard.check(loss)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sums.add(recon.sum(), commitment.sum())
        counts += torch.bincount(codes.flatten(), minlength=model.K)
    if guard is not None:
        guard.flush()
    recon_sum, commit_sum = sums.numpy()
    return float(recon_sum) / len(images), float(commit_sum) / len(images), counts.cpu()


def _usage(counts):
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    return int((counts > 0).sum()), float(torch.exp(-(nz * nz.log()).sum()))


def train_vqvae(variant, images, arch, params, K, *, seed, device, log=print):
    """Train a VQ-VAE on ``images`` (float tensor in [0, 1]); returns (model in eval mode, loss rows).

    ``arch`` is the VAE variant's config section (its architecture keys); ``params`` the VQ-VAE's
    training section. The loss per image is the Bernoulli reconstruction (summed BCE, nats, as
    for the VAE) plus beta * ||z_e - sg(z_q)||^2 summed over the grid. A seeded validation part
    of the images is held out; rows report both parts, code usage and dead-code restarts.
    """
    from geovq.data import subset_indices
    from geovq.train import Diverged, channels_last, on_device, split_train_val

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = channels_last(VQVAE(variant, tuple(images.shape[1:]), arch, K, params).to(device))
    keep = subset_indices(len(images), params["train_images"], seed)
    tr, va = split_train_val(len(keep), params["val_fraction"], seed)
    train_x, val_x = on_device(images[keep[tr]], device), on_device(images[keep[va]], device)
    log(f"VQ-VAE {variant}: grid {model.latent_shape}, K={K}; {len(train_x)} train / {len(val_x)} validation images")
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    guard = Diverged(f"{variant} VQ-VAE", params["epochs"], params["lr"])
    rows = []
    for epoch in range(1, params["epochs"] + 1):
        t0 = time.perf_counter()
        guard.epoch = epoch
        restarts0 = model.vq.restarts
        model.train()
        tr_recon, tr_commit, tr_counts = _epoch(model, train_x, params["batch_size"], device, opt, gen, guard)
        model.eval()
        with torch.no_grad():
            va_recon, va_commit, va_counts = (
                _epoch(model, val_x, 1024, device) if len(val_x) else (math.nan,) * 2 + (tr_counts,)
            )
        if len(val_x):
            guard.check(va_recon + va_commit, "validation loss")
        used, perplexity = _usage(va_counts)
        row = {
            "epoch": epoch,
            "train_recon": tr_recon,
            "train_commitment": tr_commit,
            "val_recon": va_recon,
            "val_commitment": va_commit,
            "val_codes_used": used,
            "val_perplexity": perplexity,
            "restarts": model.vq.restarts - restarts0,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        log(
            f"epoch {epoch}/{params['epochs']}: train recon {tr_recon:.2f} commit {tr_commit:.3f}; val recon "
            f"{va_recon:.2f} commit {va_commit:.3f}; codes used {used}/{K} (perplexity {perplexity:.1f}); "
            f"{row['restarts']} restarts; {row['seconds']:.1f}s"
        )
    guard.check_model(model)
    return model.eval(), rows


@torch.no_grad()
def encode_codes(model, images, device, batch_size=1024):
    """(z_e (N, C, H, W) float32, codes (N, H, W) int64) of every image, model in eval mode."""
    model.eval()
    zs, cs = [], []
    for i in range(0, len(images), batch_size):
        z_e = model.encode(images[i : i + batch_size].to(device))
        zs.append(z_e.cpu())
        cs.append(model.quantize(z_e)[1].cpu())
    return torch.cat(zs).numpy().astype(np.float32), torch.cat(cs).numpy().astype(np.int64)


# ---------------------------------------------------------------- checkpoints
def save_vqvae(path, model, arch, *, dataset, training=None):
    """The VQ-VAE checkpoint; ``training``, the settings it was trained with, is kept for the record."""
    from geovq.train import ARCH_KEYS

    save_checkpoint(
        path,
        "vqvae",
        model,
        variant=model.variant,
        dataset=dataset,
        image_shape=list(model.image_shape),
        arch={k: arch[k] for k in ARCH_KEYS[model.variant]},
        K=model.K,
        vq={k: getattr(model.vq, k) for k in VQ_KEYS},
        training=dict(training or {}),
    )


def load_vqvae(path, device="cpu", dataset=None):
    """A VQ-VAE from its checkpoint, in eval mode; ``dataset`` if given must match the checkpoint's."""
    return _vqvae_from(load_checkpoint(path, "vqvae", dataset), device)


def _vqvae_from(ck, device):
    return restore(ck, VQVAE(ck["variant"], tuple(ck["image_shape"]), ck["arch"], ck["K"], ck["vq"]), device)


def load_decoder(path, device="cpu", dataset=None):
    """The model whose ``decode(z)`` turns a quantizer's code vectors into images: a VAE or a VQ-VAE checkpoint."""
    from geovq.train import vae_from

    ck = load_checkpoint(path, ("vae", "vqvae"), dataset)
    return _vqvae_from(ck, device) if ck["kind"] == "vqvae" else vae_from(ck, device)
