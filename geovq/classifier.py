"""A small CNN classifier per dataset: its penultimate features feed the Fréchet distance of generated images.

It learns the dataset's classes where there are labels of at least two; otherwise (your own images
without labels, or of one class) which of 4 rotations was applied to an image (RotNet: Gidaris, Singh &
Komodakis 2018, "Unsupervised representation learning by predicting image rotations"). Telling upright
from turned needs the objects' shapes and parts, so its features still describe what an image shows;
``Classifier.task`` says which it learnt.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geovq.io import GeovqError, load_checkpoint, restore, save_checkpoint

ARCH_KEYS = ("channels", "feature_dim")
TASKS = ("classes", "rotation")
ROTATIONS = 4  # 0, 90, 180, 270 degrees


class Classifier(nn.Module):
    """Conv3x3 + BN + ReLU + max-pool stages, a 4x4 average pool, a hidden layer (the features), a linear head
    over ``n_classes`` classes (``task`` "classes") or the 4 rotations (``task`` "rotation")."""

    def __init__(self, image_shape, n_classes: int, channels=(32, 64), feature_dim: int = 128, task="classes"):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"classifier task {task!r}: expected one of {TASKS}")
        self.image_shape, self.n_classes, self.task = tuple(image_shape), n_classes, task
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


def rotations(x):
    """Square images x (B, C, H, W) turned by 0, 90, 180 and 270 degrees, (4B, C, H, W), and which turn
    each is, (4B,) int64 in 0..3: the examples and labels of the rotation task."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation task: images must be square, got {tuple(x.shape[-2:])}")
    turned = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(ROTATIONS)])
    return turned, torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))


def _epoch(model, images, labels, batch_size, device, opt=None, sched=None, generator=None, guard=None):
    """Mean loss and accuracy over ``images`` (against ``labels``; for the rotation task over all 4
    rotations of each image, ``labels`` unused), one optimizer step per batch if ``opt`` is given.
    ``images`` and ``labels`` already on ``device``; sums kept there (geovq.train.Sums)."""
    from geovq.train import Sums, batches

    sums, seen = Sums(2, device), 0
    for idx in batches(len(images), batch_size, generator, device):
        x = images[idx]
        if model.task == "rotation":
            x, y = rotations(x)
        else:
            y = labels[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if guard is not None:
            guard.check(loss)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        sums.add(loss.detach().double() * len(y), (logits.argmax(1) == y).sum())
        seen += len(y)
    if guard is not None:
        guard.flush()
    loss_sum, correct = sums.numpy()
    return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1)


def task_of(labels) -> str:
    """The task a classifier learns from ``labels`` (N,) or None: "classes" with at least 2 classes, else
    "rotation" (no labels, or one class: nothing to tell apart)."""
    return "classes" if labels is not None and len(torch.as_tensor(labels).unique()) >= 2 else "rotation"


def train_classifier(images, labels, params, *, seed, device, log=print):
    """Train on ``images`` (float tensor in [0, 1]) and ``labels`` (int64 tensor, or None for a dataset
    without labels); returns (model in eval mode, rows). The task is ``task_of(labels)``.

    Rows report cross-entropy and accuracy on the training part and on a seeded held-out
    validation part of the given images (for the rotation task over their 4 rotations each).
    """
    from geovq.train import Diverged, channels_last, on_device, split_train_val

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    task = task_of(labels)
    n_classes = int(labels.max()) + 1 if task == "classes" else ROTATIONS
    arch = (params["channels"], params["feature_dim"])
    model = channels_last(Classifier(tuple(images.shape[1:]), n_classes, *arch, task=task).to(device))
    tr, va = split_train_val(len(images), params["val_fraction"], seed)
    tr_y, va_y = (labels[tr], labels[va]) if task == "classes" else (None, None)
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])
    # Cosine decay to 0 over the run: with only 2-3 epochs, the last (small) steps settle
    # the weights, so the final epoch is the best one, not a noisy one.
    steps = params["epochs"] * -(-len(tr) // params["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    what = (
        f"{n_classes} classes"
        if task == "classes"
        else f"which of {ROTATIONS} rotations (no labels of 2 or more classes)"
    )
    log(f"classifier learns {what}: {len(tr)} train / {len(va)} validation images, device {device}")
    train_x, val_x = on_device(images[tr], device), on_device(images[va], device)
    tr_y, va_y = (on_device(tr_y, device), on_device(va_y, device)) if task == "classes" else (None, None)
    guard = Diverged("classifier", params["epochs"], params["lr"])
    rows = []
    for epoch in range(1, params["epochs"] + 1):
        t0 = time.perf_counter()
        guard.epoch = epoch
        model.train()
        tr_loss, tr_acc = _epoch(model, train_x, tr_y, params["batch_size"], device, opt, sched, gen, guard)
        model.eval()
        with torch.no_grad():
            va_loss, va_acc = _epoch(model, val_x, va_y, 1024, device) if len(va) else (np.nan, np.nan)
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
    """Predicted labels (N,) int64 (for the rotation task: the turn each image is taken to have)."""
    return features_and_predictions(model, images, device, batch_size)[1]


def class_accuracy(model, predicted, labels):
    """Share of ``predicted`` classes equal to ``labels``; None where ``model`` learnt rotations (the
    dataset has no classes to agree with)."""
    return float((np.asarray(predicted) == np.asarray(labels)).mean()) if model.task == "classes" else None


@torch.no_grad()
def accuracy(model, images, labels=None, device="cpu", batch_size=256) -> float:
    """Held-out accuracy of ``model`` on its own task: predicted classes against ``labels``, or for the
    rotation task the turn of each of the 4 rotations of every image (``labels`` unused)."""
    model.eval()
    images = _as_images(model, images)
    if model.task == "classes":
        return class_accuracy(model, predict(model, images, device, batch_size), labels)
    return _epoch(model, images, None, batch_size, device)[1]


def save_classifier(path, model, params, *, dataset):
    save_checkpoint(
        path,
        "classifier",
        model,
        dataset=dataset,
        image_shape=list(model.image_shape),
        n_classes=model.n_classes,
        task=model.task,
        arch={k: params[k] for k in ARCH_KEYS},
    )


def load_classifier(path, device="cpu", dataset=None):
    """A classifier from its checkpoint, in eval mode; ``dataset`` if given must match the checkpoint's."""
    ck = load_checkpoint(path, "classifier", dataset)
    arch = (ck["arch"]["channels"], ck["arch"]["feature_dim"])
    model = Classifier(tuple(ck["image_shape"]), ck["n_classes"], *arch, task=ck.get("task", "classes"))
    return restore(ck, model, device)
