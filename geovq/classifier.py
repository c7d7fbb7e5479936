"""A small CNN classifier per dataset: its penultimate features feed the Fréchet distance of generated images."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geovq.io import GeovqError, load_checkpoint, restore, save_checkpoint

ARCH_KEYS = ("channels", "feature_dim")


class Classifier(nn.Module):
    """Conv3x3 + BN + ReLU + max-pool stages, a 4x4 average pool, a hidden layer (the features), a linear head."""

    def __init__(self, image_shape, n_classes: int, channels=(32, 64), feature_dim: int = 128):
        super().__init__()
        self.image_shape, self.n_classes = tuple(image_shape), n_classes
        layers, cin = [], self.image_shape[0]
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            cin = c
        # A fixed 4x4 pool makes the feature layer the same for 16x16, 28x28 and 32x32 images.
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(cin * 16, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x):
        return self.feature(self.body(x))

    def forward(self, x):
        return self.head(self.features(x))


def _epoch(model, images, labels, batch_size, device, opt=None, sched=None, generator=None, guard=None):
    from geovq.train import Sums, batches

    sums = Sums(2, device)
    for idx in batches(len(images), batch_size, generator, device):
        x, y = images[idx], labels[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if guard is not None:
            guard.check(loss)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        sums.add(loss.detach().double() * len(idx), (logits.argmax(1) == y).sum())
    if guard is not None:
        guard.flush()
    loss_sum, correct = sums.numpy()
    return float(loss_sum) / max(len(images), 1), float(correct) / max(len(images), 1)


def train_classifier(images, labels, params, *, seed, device, log=print):
    """Train on ``images`` (float tensor in [0, 1]) and ``labels``; returns (model in eval mode, rows).

    Rows report cross-entropy and accuracy on the training part and on a seeded held-out
    validation part of the given images.
    """
    from geovq.train import Diverged, on_device, split_train_val

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_classes = int(labels.max()) + 1
    model = Classifier(tuple(images.shape[1:]), n_classes, params["channels"], params["feature_dim"]).to(device)
    tr, va = split_train_val(len(images), params["val_fraction"], seed)
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    # Cosine decay to 0 over the run: with only 2-3 epochs, the last (small) steps settle
    # the weights, so the final epoch is the best one, not a noisy one.
    steps = params["epochs"] * -(-len(tr) // params["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    log(f"classifier: {n_classes} classes, {len(tr)} train / {len(va)} validation images, device {device}")
    train_x, train_y = on_device(images[tr], device), on_device(labels[tr], device)
    val_x, val_y = on_device(images[va], device), on_device(labels[va], device)
    guard = Diverged("classifier", params["epochs"], params["lr"])
    rows = []
    for epoch in range(1, params["epochs"] + 1):
        t0 = time.perf_counter()
        guard.epoch = epoch
        model.train()
        tr_loss, tr_acc = _epoch(model, train_x, train_y, params["batch_size"], device, opt, sched, gen, guard)
        model.eval()
        with torch.no_grad():
            va_loss, va_acc = _epoch(model, val_x, val_y, 1024, device) if len(va) else (np.nan, np.nan)
        if len(va):
            guard.check(va_loss, "validation loss")
        rows.append(
            {
                "epoch": epoch,
                "train_loss": tr_loss,
                "train_acc": tr_acc,
                "val_loss": va_loss,
                "val_acc": va_acc,
                "seconds": time.perf_counter() - t0,
            }
        )
        log(
            f"epoch {epoch}/{params['epochs']}: train loss {tr_loss:.4f} acc {tr_acc:.4f}; "
            f"val loss {va_loss:.4f} acc {va_acc:.4f}; {rows[-1]['seconds']:.1f}s"
        )
    guard.check_model(model)
    return model.eval(), rows


def _as_images(model, images):
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if tuple(images.shape[1:]) != model.image_shape:
        raise GeovqError(f"images of shape {tuple(images.shape[1:])} do not fit a classifier for {model.image_shape}")
    return images


@torch.no_grad()
def features_and_predictions(model, images, device="cpu", batch_size=256):
    """(penultimate-layer features (N, F) float64, predicted labels (N,) int64) in one pass.

    ``images`` (N, C, H, W) are floats in [0, 1] or uint8. Batches of 256 run faster on a
    CPU than larger ones (they stay in cache).
    """
    model.eval()
    images = _as_images(model, images)
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i : i + batch_size].to(device))
        feats.append(f.cpu())
        preds.append(model.head(f).argmax(1).cpu())
    return torch.cat(feats).double().numpy(), torch.cat(preds).numpy().astype(np.int64)


def features(model, images, device="cpu", batch_size=256) -> np.ndarray:
    """Penultimate-layer features (N, F) float64 of images (N, C, H, W), float in [0, 1] or uint8."""
    return features_and_predictions(model, images, device, batch_size)[0]


def predict(model, images, device="cpu", batch_size=256) -> np.ndarray:
    """Predicted labels (N,) int64."""
    return features_and_predictions(model, images, device, batch_size)[1]


def save_classifier(path, model, params, *, dataset):
    save_checkpoint(
        path,
        "classifier",
        model,
        dataset=dataset,
        image_shape=list(model.image_shape),
        n_classes=model.n_classes,
        arch={k: params[k] for k in ARCH_KEYS},
    )


def load_classifier(path, device="cpu", dataset=None):
    """A classifier from its checkpoint, in eval mode; ``dataset`` if given must match the checkpoint's."""
    ck = load_checkpoint(path, "classifier", dataset)
    model = Classifier(tuple(ck["image_shape"]), ck["n_classes"], ck["arch"]["channels"], ck["arch"]["feature_dim"])
    return restore(ck, model, device)
