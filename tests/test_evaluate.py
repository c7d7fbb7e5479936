"""The evaluate stage against an independent computation: per-image MSE / PSNR / latent error of the
decoded codes, each model scored through its own decoder, columns that do not apply left empty."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geovq.io import load_npz, save_json, save_npz

ARCH = {"latent_channels": 3, "grid": 4, "channels": [4, 8]}
N_TEST, K = 12, 8


@pytest.fixture
def files(tmp_path, one_thread):
    from geovq.models import build_vae
    from geovq.train import encode_mu, save_vae
    from geovq.vqvae import VQVAE, save_vqvae

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_TEST, 1, 16, 16), dtype=np.uint8)
    save_npz(tmp_path / "test.npz", images=images, labels=np.arange(N_TEST) % 3)
    x = torch.from_numpy(images).float() / 255
    torch.manual_seed(0)
    vae = build_vae("spatial", (1, 16, 16), ARCH).eval()
    save_vae(
        tmp_path / "vae.pt",
        vae,
        "spatial",
        {**ARCH, "epochs": 1, "batch_size": 4, "lr": 1e-3, "val_fraction": 0.1, "beta": 1.0},
        dataset="synthetic",
        image_shape=(1, 16, 16),
    )
    mu = encode_mu(vae, x, "cpu")
    save_npz(tmp_path / "latents_test.npz", mu=mu, labels=np.arange(N_TEST) % 3)
    vq = VQVAE(
        "spatial", (1, 16, 16), ARCH, K, {"beta": 0.25, "decay": 0.99, "eps": 1e-5, "dead_fraction": 0.03}
    ).eval()
    save_vqvae(tmp_path / "vqvae.pt", vq, ARCH, dataset="synthetic")
    with torch.no_grad():
        z_e = vq.encode(x).numpy()
    save_npz(tmp_path / "vq_latents_test.npz", mu=z_e, labels=np.arange(N_TEST) % 3)
    codebook = rng.normal(size=(K, 3)).astype(np.float32)
    save_npz(tmp_path / "codebook.npz", codebook=codebook, K=np.int64(K))
    idx = np.array([1, 4, 5, 9])  # a subset: the stage must score exactly these images
    codes = rng.integers(0, K, size=(len(idx), 4, 4))
    save_npz(tmp_path / "codes_test.npz", codes=codes, image_index=idx, labels=idx % 3, K=np.int64(K))
    save_npz(tmp_path / "codes_train.npz", codes=codes, image_index=idx, labels=idx % 3, K=np.int64(K))
    save_json(
        tmp_path / "nll.json",
        {
            "test_bits_per_token": 2.5,
            "test_bits_per_image": 40.0,
            "test_unigram_bits_per_token": 2.9,
            "test_unigram_bits_per_image": 46.4,
            "context_gain_bits_per_token": 0.4,
            "test_class_unigram_bits_per_token": 2.7,
        },
    )

    def scores(what, fd):  # an FD, its interval and a KID, as the quality stages write them
        return {
            f"fd_{what}": fd,
            f"fd_{what}_lo": fd - 1,
            f"fd_{what}_hi": fd + 1,
            f"kid_{what}": 0.1,
            f"kid_{what}_std": 0.01,
        }

    save_json(
        tmp_path / "quality.json",
        {
            **scores("samples_test", 7.0),
            **scores("quant_recon_test", 3.0),
            "n_fd": 6,
            "n_samples": 10,
            "quant_recon_accuracy": 0.5,
            "test_bits_per_token": 2.5,
        },
    )
    save_json(
        tmp_path / "recon.json", {**scores("cont_recon_test", 1.5), **scores("floor_test_halves", 0.2), "n_fd": 6}
    )
    save_json(tmp_path / "classifier.json", {"test_accuracy": 0.93})
    return SimpleNamespace(tmp=tmp_path, x=x, vae=vae, vq=vq, mu=mu, z_e=z_e, codebook=codebook, idx=idx, codes=codes)


def run(f, quantizer, assign):
    from geovq.stages.evaluate import evaluate

    own = quantizer == "vqvae"
    inp = SimpleNamespace(
        test=f.tmp / "test.npz",
        model=f.tmp / ("vqvae.pt" if own else "vae.pt"),
        latents_test=f.tmp / ("vq_latents_test.npz" if own else "latents_test.npz"),
        codebook=f.tmp / "codebook.npz",
        codes_train=f.tmp / "codes_train.npz",
        codes_test=f.tmp / "codes_test.npz",
        nll=f.tmp / "nll.json",
        sample_quality=f.tmp / "quality.json",
        recon_quality=f.tmp / "recon.json",
        classifier_metrics=f.tmp / "classifier.json",
    )
    out = SimpleNamespace(metrics=f.tmp / f"{quantizer}_{assign}.json", per_image=f.tmp / f"{quantizer}_{assign}.npz")
    params = SimpleNamespace(
        dataset="synthetic",
        variant="spatial",
        quantizer=quantizer,
        assign=assign,
        seed=3,
        evaluate={"ssim_window": 7, "batch_size": 3},
        device="cpu",
    )
    evaluate(inp, out, params, lambda m: None)
    return json.loads(out.metrics.read_text()), load_npz(out.per_image)


def independent(decoder, z_cont, z_quant, real):
    """Per-image MSE of (cont, real), (quant, real), (quant, cont) and PSNR, in float64 numpy."""
    with torch.no_grad():
        cont = decoder(torch.from_numpy(z_cont)).double().numpy()
        quant = decoder(torch.from_numpy(z_quant)).double().numpy()
    real = real.double().numpy()
    m = {
        name: ((a - b) ** 2).reshape(len(a), -1).mean(1)
        for name, a, b in (("cont_real", cont, real), ("quant_real", quant, real), ("quant_cont", quant, cont))
    }
    return m, {k: 10 * np.log10(1 / v) for k, v in m.items()}


def test_posthoc_row_against_an_independent_computation(files):
    from geovq.codebook import quantize

    f = files
    metrics, per = run(f, "graph", "geodesic")
    z_q = quantize(f.codebook, f.codes)
    mse, psnr = independent(f.vae.decode, f.mu[f.idx], z_q, f.x[f.idx])
    np.testing.assert_array_equal(per["image_index"], f.idx)
    for name in mse:
        np.testing.assert_allclose(per[f"mse_{name}"], mse[name], rtol=1e-5)
        np.testing.assert_allclose(per[f"psnr_{name}"], psnr[name], rtol=1e-5)
        assert metrics[f"mse_{name}"] == pytest.approx(mse[name].mean(), rel=1e-5)
    from geovq.metrics import ssim

    with torch.no_grad():  # SSIM of all images at once: the stage's batches of 3 change nothing
        whole = ssim(f.vae.decode(torch.from_numpy(z_q)), f.x[f.idx], win_size=7).numpy()
    np.testing.assert_allclose(per["ssim_quant_real"], whole, rtol=1e-6)
    lat = ((z_q - f.mu[f.idx]) ** 2).sum(1).reshape(len(f.idx), -1).mean(1)
    np.testing.assert_allclose(per["latent_sq_error"], lat, rtol=1e-5)
    assert (metrics["dataset"], metrics["quantizer"], metrics["assign"], metrics["seed"]) == (
        "synthetic",
        "graph",
        "geodesic",
        3,
    )
    assert str(per["assign"]) == "geodesic" and int(per["seed"]) == 3
    # its own assignment: the prior's and the samples' figures, and the VAE's reference
    assert metrics["test_bits_per_token"] == 2.5 and metrics["fd_samples_test"] == 7.0
    assert metrics["fd_samples_test_hi"] == 8.0 and metrics["kid_quant_recon_test_std"] == 0.01
    assert metrics["context_gain_bits_per_token"] == 0.4 and metrics["test_unigram_bits_per_token"] == 2.9
    assert (
        metrics["fd_cont_recon_test"] == 1.5 and metrics["kid_cont_recon_test"] == 0.1 and "mse_ze_real" not in metrics
    )
    assert (
        metrics["fd_floor_test_halves"] == 0.2 and metrics["n_fd"] == 6 and metrics["classifier_test_accuracy"] == 0.93
    )
    assert metrics["classifier_task"] == "classes"  # a metrics.json without a task: written before rotation existed
    # code usage over every train code and every test code, with the bias-corrected perplexity beside
    assert metrics["train_tokens"] == metrics["test_tokens"] == f.codes.size
    assert metrics["test_perplexity_miller_madow"] > metrics["test_perplexity"]
    assert metrics["quant_cont_over_cont_real"] == pytest.approx(
        mse["quant_cont"].mean() / mse["cont_real"].mean(), rel=1e-5
    )
    assert metrics["latent_units"] == 3 * 4 * 4


def test_other_assignment_leaves_the_priors_figures_empty(files):
    metrics, _ = run(files, "graph", "nearest")
    for key in ("test_bits_per_token", "context_gain_bits_per_token", "fd_samples_test", "kid_quant_recon_test"):
        assert metrics[key] is None, key
    assert metrics["mse_quant_real"] is not None
    with pytest.raises(Exception, match="no 'geodesic' assignment"):
        run(files, "kmeans", "geodesic")


def test_vqvae_row_uses_its_own_decoder_and_encoder_output(files):
    from geovq.codebook import quantize

    f = files
    metrics, per = run(f, "vqvae", "nearest")
    z_q = quantize(f.codebook, f.codes)
    mse, _ = independent(f.vq.decode, f.z_e[f.idx], z_q, f.x[f.idx])
    np.testing.assert_allclose(per["mse_quant_real"], mse["quant_real"], rtol=1e-5)
    np.testing.assert_allclose(per["mse_ze_real"], mse["cont_real"], rtol=1e-5)
    np.testing.assert_allclose(per["mse_quant_ze"], mse["quant_cont"], rtol=1e-5)
    # the VAE's columns do not apply: empty, never borrowed
    for name in ("mse_cont_real", "psnr_cont_real", "mse_quant_cont", "latent_sq_error"):
        assert np.isnan(per[name]).all() and metrics[name] is None, name
    assert metrics["fd_cont_recon_test"] is None and metrics["kid_cont_recon_test"] is None
    assert metrics["fd_floor_test_halves"] == 0.2  # the real floor applies to every row
    # and the VAE's decoder would have given other numbers
    mse_vae, _ = independent(f.vae.decode, f.mu[f.idx], z_q, f.x[f.idx])
    assert not np.allclose(mse_vae["quant_real"], per["mse_quant_real"])
