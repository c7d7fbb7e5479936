"""Training that diverges stops with one line naming the model, the epoch and the loss, before any
checkpoint is written: every model (VAE, VQ-VAE, prior, classifier), and once through the workflow."""

import re

import numpy as np
import pytest
import torch
import yaml

from conftest import run_snakemake
from geovq.io import GeovqError

# tiny models: one thread is faster and steadier on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")

DIVERGED = re.compile(r"training diverged in epoch (\d+)/(\d+): .*(nan|inf)")


@pytest.fixture(scope="module")
def shapes():
    from geovq.data import synthetic

    x, y = synthetic(200, size=16, classes=4, seed=0)
    return torch.from_numpy(x).float() / 255, torch.from_numpy(y).long()


def diverges(fit_and_save, tmp_path, model_name):
    """Run what a training stage does (train, then write the checkpoint); it must stop with one line
    naming ``model_name``, the epoch and the non-finite value, and nothing may be written."""
    ckpt = tmp_path / "out" / "model.pt"
    with pytest.raises(GeovqError) as e:
        fit_and_save(ckpt)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{model_name} training diverged"), msg
    m = DIVERGED.search(msg)
    assert m and 1 <= int(m[1]) <= int(m[2]), msg
    assert not ckpt.exists() and not list(tmp_path.rglob("*.pt")), "a checkpoint was written"
    return msg


@pytest.mark.parametrize("variant", ["vanilla", "spatial"])
def test_vae_with_absurd_lr(variant, shapes, tmp_path):
    from geovq.train import save_vae, train_vae

    images, _ = shapes
    arch = {"vanilla": dict(latent_dim=4, hidden=32), "spatial": dict(latent_channels=3, grid=4, channels=[8, 8])}[
        variant
    ]
    params = dict(arch, epochs=2, batch_size=32, lr=1e6, beta=1.0, val_fraction=0.1)

    def fit_and_save(path):
        model, _ = train_vae(variant, images, params, seed=0, device="cpu", log=lambda m: None)
        save_vae(path, model, variant, params, dataset="synthetic", image_shape=images.shape[1:])

    msg = diverges(fit_and_save, tmp_path, f"{variant} VAE")
    assert "lr 1e+06" in msg


@pytest.mark.parametrize("variant", ["vanilla", "spatial"])
def test_vqvae_with_absurd_lr(variant, shapes, tmp_path):
    from geovq.vqvae import save_vqvae, train_vqvae

    images, _ = shapes
    arch = {"vanilla": dict(latent_dim=4, hidden=32), "spatial": dict(latent_channels=3, grid=4, channels=[8, 8])}[
        variant
    ]
    params = {
        "beta": 0.25,
        "decay": 0.99,
        "eps": 1e-5,
        "dead_fraction": 0.03,
        "epochs": 2,
        "batch_size": 32,
        "lr": 1e6,
        "val_fraction": 0.1,
        "train_images": None,
    }

    def fit_and_save(path):
        model, _ = train_vqvae(variant, images, arch, params, 16, seed=0, device="cpu", log=lambda m: None)
        save_vqvae(path, model, arch, dataset="synthetic")

    diverges(fit_and_save, tmp_path, f"{variant} VQ-VAE")


def test_prior_with_absurd_lr(tmp_path):
    from geovq.prior import save_prior, train_prior

    codes = np.random.default_rng(0).integers(0, 8, (200, 4, 4))
    params = dict(
        conditional=False,
        n_layer=1,
        n_head=2,
        n_embd=32,
        dropout=0.0,
        epochs=3,
        batch_size=32,
        lr=1e6,
        weight_decay=0.0,
        val_fraction=0.2,
        patience=3,
        train_images=None,
    )

    def fit_and_save(path):
        model, _ = train_prior(codes, np.zeros(200, np.int64), 8, params, seed=0, device="cpu", log=lambda m: None)
        save_prior(path, model, dataset="synthetic")

    diverges(fit_and_save, tmp_path, "prior")


def test_prior_with_nan_logits(tmp_path, monkeypatch):
    """A NaN from inside the model (here: injected into the logits in the second epoch) stops it too."""
    from geovq import prior

    codes = np.tile(np.arange(16) % 8, (200, 1)).reshape(200, 4, 4)
    params = dict(
        conditional=False,
        n_layer=1,
        n_head=2,
        n_embd=32,
        dropout=0.0,
        epochs=3,
        batch_size=32,
        lr=1e-2,
        weight_decay=0.0,
        val_fraction=0.2,
        patience=3,
        train_images=None,
    )
    forward, calls = prior.CodePrior.forward, []

    def poisoned(self, x, labels=None):
        out = forward(self, x, labels)
        calls.append(self.training)
        return out * float("nan") if self.training and sum(calls) > 6 else out  # 5 train batches per epoch

    monkeypatch.setattr(prior.CodePrior, "forward", poisoned)

    def fit_and_save(path):
        model, _ = prior.train_prior(codes, None, 8, params, seed=0, device="cpu", log=lambda m: None)
        prior.save_prior(path, model, dataset="synthetic")

    msg = diverges(fit_and_save, tmp_path, "prior")
    assert "epoch 2/3" in msg and "training loss is nan" in msg


def test_classifier_with_a_nan_image(shapes, tmp_path):
    """lr 1e6 leaves the classifier's cross-entropy huge but finite; a NaN pixel in one training image is not."""
    from geovq.classifier import save_classifier, train_classifier

    images, labels = shapes
    images = images.clone()
    images[17, 0, 3, 3] = float("nan")
    params = {
        "channels": [8, 16],
        "feature_dim": 32,
        "epochs": 2,
        "batch_size": 32,
        "lr": 3e-3,
        "val_fraction": 0.1,
        "seed": 0,
    }

    def fit_and_save(path):
        model, _ = train_classifier(images, labels, params, seed=0, device="cpu", log=lambda m: None)
        save_classifier(path, model, params, dataset="synthetic")

    msg = diverges(fit_and_save, tmp_path, "classifier")
    assert "epoch 1/2" in msg and "training loss is nan" in msg


@pytest.mark.slow
def test_diverging_vae_stops_its_rule(tmp_path):
    """Through Snakemake and the job runner: rule train_vae fails with the one-line message on stderr,
    and its checkpoint (and every other output of the rule) is absent. The lr comes from --config."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "datasets": ["synthetic"],
                "variants": ["vanilla"],
                "quantizers": ["kmeans"],
                "seeds": [0],
                "download": False,
                "device": "cpu",
                "threads": 1,
                "dataset_options": {"n_train": 300, "n_test": 60, "size": 16, "classes": 4, "channels": 1},
                "vae": {"vanilla": {"latent_dim": 4, "hidden": 32, "epochs": 2, "batch_size": 32}},
            }
        )
    )
    run = tmp_path / "results/synthetic/vanilla/seed0/vae"
    proc = run_snakemake(
        tmp_path,
        "results/synthetic/vanilla/seed0/vae/model.pt",
        "--config",
        'vae={"vanilla": {"lr": 1e6}}',
        configfile=cfg,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    line = next((ln for ln in out.splitlines() if "geovq error in rule train_vae:" in ln), None)
    assert line is not None, out[-3000:]
    assert "vanilla VAE training diverged in epoch 1/2: training loss is nan" in line, line
    assert not any(run.glob("*.pt")) and not any(run.glob("*.npz")) and not any(run.glob("*.csv")), list(run.iterdir())
