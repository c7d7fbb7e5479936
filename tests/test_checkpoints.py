"""Checkpoints hold tensors and plain values only and are read with torch.load(weights_only=True):
one carrying a pickled object is refused (its code never runs); every kind the pipeline writes loads."""

import os

import numpy as np
import pytest
import torch

from geovq.io import GeovqError, load_checkpoint, load_torch, save_checkpoint, save_torch

pytestmark = pytest.mark.usefixtures("one_thread")


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint in a shared results/ could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    torch.save(
        {"kind": "vae", "dataset": "synthetic", "state_dict": {"w": torch.zeros(2)}, "x": RunsCode(marker)}, path
    )
    for load in (load_torch, lambda p: load_checkpoint(p, "vae")):
        with pytest.raises(GeovqError) as e:
            load(path)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{path}: refused") and "pickled Python object" in msg, msg
        assert "system" in msg and "weights_only=True" in msg, msg
    assert not marker.exists(), "unpickling ran the checkpoint's code"


def test_numpy_value_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"kind": "vae", "state_dict": {}, "K": np.int64(8)}, path)
    with pytest.raises(GeovqError, match="refused: the checkpoint holds a pickled Python object") as e:
        load_torch(path)
    assert "\n" not in str(e.value)


def test_corrupt_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(GeovqError) as e:
        load_torch(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a readable checkpoint") and "\n" not in msg, msg


def test_writer_refuses_what_the_reader_would_refuse(tmp_path):
    model = torch.nn.Linear(2, 3)
    for bad in ({"K": np.int64(8)}, {"cfg": {"lr": np.float64(0.1)}}, {"shape": [np.int32(3)]}, {"obj": object()}):
        with pytest.raises(TypeError, match="is not a tensor or a plain value"):
            save_checkpoint(tmp_path / "m.pt", "vae", model, **bad)
    with pytest.raises(TypeError, match="is not a str"):
        save_torch(tmp_path / "m.pt", {1: torch.zeros(1)})
    assert not list(tmp_path.iterdir()), "a refused checkpoint was written"
    save_checkpoint(tmp_path / "m.pt", "vae", model, arch={"channels": [8, 16], "lr": 1e-3, "x": None}, shape=(1, 16))
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ck["arch"]["channels"] == [8, 16] and torch.equal(ck["state_dict"]["weight"], model.weight.detach())


def test_every_checkpoint_kind_loads_with_weights_only(tmp_path):
    """VAE (both variants), VQ-VAE, prior and classifier checkpoints as the stages write them."""
    from geovq.classifier import Classifier, load_classifier, save_classifier
    from geovq.models import build_vae
    from geovq.prior import CodePrior, PriorConfig, load_prior, save_prior
    from geovq.train import load_vae, save_vae
    from geovq.vqvae import VQVAE, load_vqvae, save_vqvae

    shape = torch.Size([1, 16, 16])  # as the stages pass it: a tensor's shape
    x = torch.rand(3, *shape)
    arch = {
        "vanilla": {"latent_dim": 4, "hidden": 32},
        "spatial": {"latent_channels": 3, "grid": 4, "channels": [8, 8]},
    }
    torch.manual_seed(0)
    for variant in ("vanilla", "spatial"):
        vae = build_vae(variant, tuple(shape), arch[variant]).eval()
        save_vae(tmp_path / f"vae_{variant}.pt", vae, variant, arch[variant], dataset="synthetic", image_shape=shape)
        back = load_vae(tmp_path / f"vae_{variant}.pt", dataset="synthetic")
        torch.testing.assert_close(back.encode(x)[0], vae.encode(x)[0])
        vq = VQVAE(
            variant, tuple(shape), arch[variant], 8, {"beta": 0.25, "decay": 0.99, "eps": 1e-5, "dead_fraction": 0.03}
        ).eval()
        save_vqvae(tmp_path / f"vqvae_{variant}.pt", vq, arch[variant], dataset="synthetic")
        back = load_vqvae(tmp_path / f"vqvae_{variant}.pt", dataset="synthetic")
        torch.testing.assert_close(back.decode(back.encode(x)), vq.decode(vq.encode(x)))
    prior = CodePrior(PriorConfig(K=8, grid=(2, 2), n_classes=3, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()
    save_prior(tmp_path / "prior.pt", prior, dataset="synthetic", quantizer="kmeans")
    codes, labels = torch.randint(0, 8, (3, 4)), torch.tensor([0, 1, 2])
    torch.testing.assert_close(
        load_prior(tmp_path / "prior.pt", dataset="synthetic")(codes, labels), prior(codes, labels)
    )
    clf = Classifier(tuple(shape), 4, [8, 16], 32).eval()
    save_classifier(tmp_path / "clf.pt", clf, {"channels": [8, 16], "feature_dim": 32}, dataset="synthetic")
    torch.testing.assert_close(load_classifier(tmp_path / "clf.pt", dataset="synthetic")(x), clf(x))
    for path in tmp_path.glob("*.pt"):
        torch.load(path, weights_only=True)  # the reader's own setting, directly
