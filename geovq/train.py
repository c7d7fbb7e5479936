"""VAE training, checkpoints and encoding of whole splits into latent means."""

from __future__ import annotations

import time

import numpy as np
import torch

from geovq.io import GeovqError, load_checkpoint, restore, save_checkpoint
from geovq.models import build_vae, elbo_terms

ARCH_KEYS = {"vanilla": ("latent_dim", "hidden"), "spatial": ("latent_channels", "grid", "channels")}


def split_train_val(n: int, val_fraction: float, seed: int):
    """Seeded disjoint (train, validation) index arrays; validation is never trained on."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def batches(n, batch_size, generator=None, device="cpu"):
    """Index batches of one epoch: a seeded permutation drawn on the CPU (the same on every device),
    moved to ``device`` once, so that indexing data already there costs no host round trip per step."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(device)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def on_device(images, device):
    """The whole data set on ``device`` once (no per-step copies); on the CPU the tensor itself.
    Image batches (4-D) in channels-last layout, as `channels_last` models take them."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if images.ndim == 4 else images


def channels_last(model):
    """``model`` with its convolutions' weights in channels-last (NHWC) layout: oneDNN's CPU kernels
    for the small convolutions here run about twice as fast on it (benchmarks/README.md), cuDNN's as
    fast or faster. The same function; float sums run in another order, so the last digits move."""
    return model.to(memory_format=torch.channels_last)


class Sums:
    """Per-epoch sums of per-step values kept on the device in float64 and read once, at the end:
    a per-step ``.item()`` would stop an accelerator every step. On the CPU the additions are the
    same float64 additions of the same float32 values as summing Python floats: the same numbers."""

    def __init__(self, n, device):
        self.total = torch.zeros(n, dtype=torch.float64, device=device)

    def add(self, *values):
        self.total += torch.stack([torch.as_tensor(v).detach().to(self.total.device).double() for v in values])

    def numpy(self):
        return self.total.cpu().numpy()


class Diverged:
    """Where a training run is, for the one-line error when its loss stops being finite."""

    def __init__(self, model: str, epochs: int, lr: float):
        self.model, self.epochs, self.lr, self.epoch, self.last = model, epochs, lr, 0, None
        self._bad = self._value = self._last = self._what = None

    def _fail(self, what):
        raise GeovqError(
            f"{self.model} training diverged in epoch {self.epoch}/{self.epochs}: {what} "
            f"(lr {self.lr:g}; a lower learning rate may help); no checkpoint written"
        )

    def check(self, loss, what="training loss"):
        """Raise GeovqError if ``loss`` (a scalar tensor, or a float) is NaN or inf: one cheap test per
        step on the CPU. A loss on an accelerator is not read back every step (that would stop it):
        its first non-finite value is kept there, and :meth:`flush` raises at the end of the epoch."""
        if torch.is_tensor(loss) and loss.device.type != "cpu":
            v = loss.detach().float()
            bad = ~torch.isfinite(v)
            if self._bad is None:
                self._bad, self._value, self._what = bad, v, what
            else:
                self._value = torch.where(self._bad | ~bad, self._value, v)
                self._bad = self._bad | bad
            self._last = v
            return
        value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
        if not np.isfinite(value):
            self._fail(f"{what} is {value}")
        self.last = value

    def flush(self):
        """Raise for a non-finite loss seen on an accelerator since the last flush (one read back)."""
        if self._bad is not None:
            bad, value, what, last = bool(self._bad), float(self._value), self._what, float(self._last)
            self._bad = self._value = self._last = None
            if bad:
                self._fail(f"{what} is {value}")
            self.last = last

    def check_model(self, model):
        """Raise GeovqError if any weight or buffer of ``model`` is NaN or inf (nothing is saved from it)."""
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                last = f"; last loss {self.last:.6g}" if self.last is not None else ""
                self._fail(f"weights {name} became nan or inf{last}")


def _epoch_loss(model, images, batch_size, beta, device, opt=None, generator=None, guard=None):
    """Per-image means of (-ELBO, reconstruction, KL) over one pass; ``images`` already on ``device``."""
    sums = Sums(3, device)
    for idx in batches(len(images), batch_size, generator, device):
        x = images[idx]
        logits, mu, logvar = model(x)
        recon, kl = elbo_terms(logits, x, mu, logvar)
        loss = (recon + beta * kl).mean()
        if guard is not None:
            guard.check(loss)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sums.add((recon + kl).sum(), recon.sum(), kl.sum())
    if guard is not None:
        guard.flush()
    return sums.numpy() / len(images)


def train_vae(variant, images, params, *, seed, device, log=print):
    """Train a VAE on ``images`` (float tensor in [0, 1]); returns (model in eval mode, loss rows).

    Each row has the per-image negative ELBO (nats, beta = 1), reconstruction and KL terms
    on the training part and on a held-out validation part of the training set.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = channels_last(build_vae(variant, tuple(images.shape[1:]), params).to(device))
    tr, va = split_train_val(len(images), params["val_fraction"], seed)
    train_x, val_x = on_device(images[tr], device), on_device(images[va], device)
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    guard = Diverged(f"{variant} VAE", params["epochs"], params["lr"])
    rows = []
    for epoch in range(1, params["epochs"] + 1):
        t0 = time.perf_counter()
        guard.epoch = epoch
        model.train()
        tr_loss = _epoch_loss(model, train_x, params["batch_size"], params["beta"], device, opt, gen, guard)
        model.eval()
        with torch.no_grad():
            va_loss = _epoch_loss(model, val_x, 1024, params["beta"], device) if len(val_x) else [np.nan] * 3
        if len(val_x):
            guard.check(va_loss[0], "validation -ELBO")
        row = {
            "epoch": epoch,
            "train_neg_elbo": tr_loss[0],
            "train_recon": tr_loss[1],
            "train_kl": tr_loss[2],
            "val_neg_elbo": va_loss[0],
            "val_recon": va_loss[1],
            "val_kl": va_loss[2],
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        log(
            f"epoch {epoch}/{params['epochs']}: train -ELBO {tr_loss[0]:.2f} (recon {tr_loss[1]:.2f}, "
            f"KL {tr_loss[2]:.2f}); val -ELBO {va_loss[0]:.2f}; {row['seconds']:.1f}s"
        )
    guard.check_model(model)
    model.eval()
    return model, rows


@torch.no_grad()
def encode_mu(model, images, device, batch_size=1024) -> np.ndarray:
    """Latent means mu (N, C, H, W) float32 of every image, model in eval mode."""
    model.eval()
    out = [model.encode(images[i : i + batch_size].to(device))[0].cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


@torch.no_grad()
def decode(model, z, device, batch_size=1024) -> torch.Tensor:
    """Decoded image means (N, C, H, W) on the CPU for latent grids ``z``, model in eval mode."""
    model.eval()
    z = torch.as_tensor(z, dtype=torch.float32)
    return torch.cat([model.decode(z[i : i + batch_size].to(device)).cpu() for i in range(0, len(z), batch_size)])


def save_vae(path, model, variant, params, *, dataset, image_shape):
    arch = {k: params[k] for k in ARCH_KEYS[variant]}
    training = {k: params[k] for k in ("epochs", "batch_size", "lr", "val_fraction", "beta") if k in params}
    save_checkpoint(
        path,
        "vae",
        model,
        variant=variant,
        dataset=dataset,
        image_shape=list(image_shape),
        arch=arch,
        training=training,
    )


def load_vae(path, device="cpu", dataset=None):
    """A VAE from its checkpoint, in eval mode; ``dataset`` if given must match the checkpoint's."""
    return vae_from(load_checkpoint(path, "vae", dataset), device)


def vae_from(ck, device="cpu"):
    """The VAE of a loaded checkpoint dict (kind "vae"), in eval mode on ``device``."""
    return restore(ck, build_vae(ck["variant"], tuple(ck["image_shape"]), ck["arch"]), device)
