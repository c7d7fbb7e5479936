"""VQ-VAE: straight-through gradient and EMA update by hand, dead-code restarts, shapes, the train_vqvae stage."""

from types import SimpleNamespace

import pytest
import torch

from geovq.io import GeovqError, load_npz
from geovq.models import build_vae
from geovq.vqvae import VQVAE, VectorQuantizerEMA, load_decoder, load_vqvae, save_vqvae, train_vqvae

VQ = {"beta": 0.25, "decay": 0.99, "eps": 1e-5, "dead_fraction": 0.03}
ARCH = {"vanilla": {"latent_dim": 4, "hidden": 32}, "spatial": {"latent_channels": 3, "grid": 4, "channels": [8, 8]}}


# tiny models: one thread is faster and steadier on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _quantizer(embedding, count, decay=0.5, eps=0.0, beta=0.25, dead_fraction=0.0):
    vq = VectorQuantizerEMA(
        len(embedding), len(embedding[0]), beta=beta, decay=decay, eps=eps, dead_fraction=dead_fraction
    )
    vq.embedding.copy_(torch.tensor(embedding, dtype=torch.float32))
    vq.ema_count.copy_(torch.tensor(count, dtype=torch.float32))
    vq.ema_sum.copy_(vq.embedding * vq.ema_count[:, None])
    vq.initialized.fill_(True)
    return vq


def _grid(values):
    """1-d latents (N,) as a (1, 1, 1, N) grid: one image, C = 1, N cells in a row."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_straight_through_gradient_and_commitment_by_hand():
    vq = _quantizer([[0.0], [10.0]], [1.0, 1.0]).eval()  # eval: no codebook update
    z_e = _grid([1.0, 2.0, 9.0]).requires_grad_()
    z_q, codes, commitment = vq(z_e)
    assert codes.flatten().tolist() == [0, 0, 1]
    assert z_q.flatten().tolist() == [0.0, 0.0, 10.0]  # forward value: the codes
    # commitment = beta * sum (z_e - z_q)^2 = 0.25 * (1 + 4 + 1)
    assert commitment.item() == pytest.approx(1.5)
    w = torch.tensor([1.0, -2.0, 3.0]).view(1, 1, 1, 3)
    ((w * z_q).sum() + commitment.sum()).backward()
    # straight-through: d/dz_e (w . z_q) = w; commitment adds 2 beta (z_e - z_q) = 0.5 * [1, 2, -1]
    assert z_e.grad.flatten().tolist() == pytest.approx([1.5, -1.0, 2.5])


def test_ema_update_with_laplace_smoothing_by_hand():
    vq = _quantizer([[0.0], [10.0], [50.0]], [1.0, 1.0, 0.0], decay=0.5, eps=0.1).train()
    z_q, codes, _ = vq(_grid([1.0, 2.0, 9.0]))
    assert codes.flatten().tolist() == [0, 0, 1]
    assert z_q.flatten().tolist() == [0.0, 0.0, 10.0]  # quantized with the codes before the update
    # N = 0.5 * [1, 1, 0] + 0.5 * [2, 1, 0] = [1.5, 1.0, 0];  m = 0.5 * [0, 10, 0] + 0.5 * [3, 9, 0]
    assert vq.ema_count.tolist() == pytest.approx([1.5, 1.0, 0.0])
    assert vq.ema_sum.flatten().tolist() == pytest.approx([1.5, 9.5, 0.0])
    # smoothed N_k = (N_k + 0.1) / (2.5 + 3 * 0.1) * 2.5; e_k = m_k / smoothed N_k
    smoothed = [(1.5 + 0.1) / 2.8 * 2.5, (1.0 + 0.1) / 2.8 * 2.5, 0.1 / 2.8 * 2.5]
    assert vq.embedding.flatten().tolist() == pytest.approx([1.5 / smoothed[0], 9.5 / smoothed[1], 0.0])


def test_dead_codes_restart_from_batch_vectors():
    torch.manual_seed(0)
    # code 2 has an EMA count of 0.01, below 0.5 of the uniform share (4 vectors / 3 codes)
    vq = _quantizer([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]], [2.0, 2.0, 0.01], decay=0.9, dead_fraction=0.5).train()
    batch = torch.tensor([[0.1, 0.0], [0.0, 0.2], [5.0, 5.1], [4.9, 5.0]])
    vq(batch.T.reshape(1, 2, 1, 4))
    assert vq.restarts == 1
    new = vq.embedding[2]
    assert any(torch.equal(new, row) for row in batch)  # a random encoder output of the batch
    # restarted with twice the threshold (0.5 x 4/3) as its count
    assert vq.ema_count[2].item() == pytest.approx(4 / 3)
    torch.testing.assert_close(vq.ema_sum[2], new * 4 / 3)
    assert vq.embedding[:2].tolist() != [[0.0, 0.0], [5.0, 5.0]]  # the live codes moved by EMA
    # the first training step starts every code at an encoder output, so none is far away
    fresh = VectorQuantizerEMA(3, 2, **VQ).train()
    fresh(batch.T.reshape(1, 2, 1, 4))
    assert fresh.restarts == 3 and bool(fresh.initialized)
    # each starts as if just restarted (count 2 x 0.03 x 4/3 = 0.08), then this step's EMA update
    # (decay 0.99) adds 0.01 per assigned vector: 3 x 0.99 x 0.08 + 0.01 x 4
    assert fresh.ema_count.sum().item() == pytest.approx(3 * 0.99 * 0.08 + 0.04)


@pytest.mark.parametrize("variant", ["vanilla", "spatial"])
def test_shapes_match_the_vae_variant(variant):
    vae = build_vae(variant, (1, 16, 16), ARCH[variant])
    model = VQVAE(variant, (1, 16, 16), ARCH[variant], 12, VQ).eval()
    x = torch.rand(5, 1, 16, 16)
    z_e = model.encode(x)
    assert z_e.shape == (5, *vae.latent_shape) and model.latent_shape == vae.latent_shape
    z_q, codes = model.quantize(z_e)
    assert z_q.shape == z_e.shape and codes.shape == (5, *vae.latent_shape[1:])
    assert codes.min() >= 0 and codes.max() < 12
    out = model.decode(z_q)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # the same decoder family: the VAE's decoder parameters load into the VQ-VAE's decoder
    model.decoder.load_state_dict(vae.decoder.state_dict())


def test_training_uses_and_restarts_codes(tmp_path):
    from geovq.data import synthetic

    images = torch.from_numpy(synthetic(400, size=16, classes=4, seed=0)[0]).float() / 255
    params = {**VQ, "epochs": 2, "batch_size": 32, "lr": 2e-3, "val_fraction": 0.1, "train_images": None}
    model, rows = train_vqvae("spatial", images, ARCH["spatial"], params, 16, seed=0, device="cpu", log=lambda m: None)
    # it learns: like with like, the validation (and training) reconstruction after the last epoch is
    # well below the one after the first (the EMA codebook alone, weights frozen, moves it by < 1 %)
    assert rows[-1]["val_recon"] < 0.9 * rows[0]["val_recon"]
    assert rows[-1]["train_recon"] < 0.9 * rows[0]["train_recon"]
    assert rows[0]["restarts"] >= 16 and rows[-1]["val_codes_used"] > 4
    save_vqvae(tmp_path / "m.pt", model, ARCH["spatial"], dataset="synthetic")
    back = load_decoder(tmp_path / "m.pt", dataset="synthetic")
    torch.testing.assert_close(back.decode(back.encode(images[:4])), model.decode(model.encode(images[:4])))
    with pytest.raises(GeovqError, match="dataset 'synthetic', expected 'mnist'"):
        load_vqvae(tmp_path / "m.pt", dataset="mnist")


def test_train_vqvae_stage(tmp_path):
    from geovq.data import prepare
    from geovq.stages.vqvae import train_vqvae as stage

    data = SimpleNamespace(train=tmp_path / "train.npz", test=tmp_path / "test.npz")
    prepare("synthetic", data.train, data.test, options={"n_train": 300, "n_test": 60, "size": 16})
    names = ("model", "losses", "codebook", "codes_train", "codes_test", "latents_test")
    out = SimpleNamespace(
        **{n: tmp_path / "vqvae" / f"{n}.{'pt' if n == 'model' else 'csv' if n == 'losses' else 'npz'}" for n in names}
    )
    params = SimpleNamespace(
        dataset="synthetic",
        variant="vanilla",
        seed=0,
        device="cpu",
        vae=ARCH["vanilla"],
        vqvae={**VQ, "epochs": 1, "batch_size": 32, "lr": 1e-3, "val_fraction": 0.1, "train_images": 200},
        codebook={"K": 8, "train_images": 100, "test_images": 40},
    )
    stage(data, out, params, lambda m: None)
    cb = load_npz(out.codebook, ("codebook", "K"))
    assert cb["codebook"].shape == (8, 4) and int(cb["K"]) == 8
    tr, te = load_npz(out.codes_train), load_npz(out.codes_test)
    assert tr["codes"].shape == (100, 1, 1) and te["codes"].shape == (40, 1, 1) and te["codes"].max() < 8
    lat = load_npz(out.latents_test, ("mu", "labels"))
    assert lat["mu"].shape == (60, 4, 1, 1)  # every test image, before quantization
    # the written codes are the nearest codebook rows of the written z_e
    z = lat["mu"][te["image_index"]].reshape(40, 4)
    nearest = ((z[:, None] - cb["codebook"][None]) ** 2).sum(-1).argmin(1)
    assert (nearest == te["codes"].reshape(40)).all()
