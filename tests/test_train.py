"""VAE training: a disjoint train/validation split of every image, encode_mu gives the means, seeds matter."""

import numpy as np
import pytest
import torch

from geovq.codebook import EuclideanKMeans, to_cells
from geovq.data import synthetic
from geovq.models import build_vae
from geovq.train import encode_mu, split_train_val, train_vae

ARCH = {"vanilla": {"latent_dim": 3, "hidden": 16}, "spatial": {"latent_channels": 2, "grid": 4, "channels": [4, 4]}}
TRAIN = {"epochs": 1, "batch_size": 16, "lr": 3e-3, "beta": 1.0, "val_fraction": 0.2}

# tiny models: one thread is faster and steadier on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=60, seed=0):
    return torch.from_numpy(synthetic(n, size=16, classes=4, seed=seed)[0]).float() / 255


@pytest.mark.parametrize("n", [2, 7, 10, 101, 1000])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_is_disjoint_and_covers_every_image(n, fraction):
    tr, va = split_train_val(n, fraction, seed=3)
    assert len(np.intersect1d(tr, va)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))  # each index exactly once
    assert len(va) == max(1, round(n * fraction)) and len(tr) == n - len(va)
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()
    again = split_train_val(n, fraction, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va), again))  # seeded
    if n >= 100:
        assert not np.array_equal(split_train_val(n, fraction, seed=4)[1], va)  # another seed, another split
    tr0, va0 = split_train_val(n, 0.0, seed=3)
    assert len(va0) == 0 and np.array_equal(tr0, np.arange(n))


def test_vae_trains_on_one_part_and_validates_on_the_disjoint_rest(monkeypatch):
    """Every image the model sees in training mode is a training image, every one it sees in eval mode
    (validation) is not, and together they are all the images, each part seen whole every epoch."""
    import geovq.train

    images = _images(50)
    seen = {True: [], False: []}  # model.training -> batches
    build = geovq.train.build_vae

    def spying_build(*args, **kwargs):
        model = build(*args, **kwargs)
        forward = model.forward

        def recording(x):
            seen[model.training].append(x.detach().clone())
            return forward(x)

        model.forward = recording
        return model

    monkeypatch.setattr(geovq.train, "build_vae", spying_build)
    train_vae("spatial", images, {**ARCH["spatial"], **TRAIN, "epochs": 2}, seed=0, device="cpu", log=lambda m: None)
    flat = images.flatten(1)

    def ids(batches):  # the index of each image seen, by exact equality with the inputs
        x = torch.cat(batches).flatten(1)
        match = (x[:, None] == flat[None]).all(-1)
        assert (match.sum(1) == 1).all()
        return match.int().argmax(1).numpy()

    train_ids, val_ids = ids(seen[True]), ids(seen[False])
    assert len(train_ids) == 2 * 40 and len(val_ids) == 2 * 10  # both epochs: every image of each part once
    assert set(np.bincount(train_ids, minlength=50)[np.unique(train_ids)]) == {2}
    assert set(train_ids).isdisjoint(val_ids)
    assert set(train_ids) | set(val_ids) == set(range(50))


@pytest.mark.parametrize("variant", ["vanilla", "spatial"])
def test_encode_mu_is_the_mean_not_a_sample(variant):
    torch.manual_seed(0)
    model = build_vae(variant, (1, 16, 16), ARCH[variant])
    x = _images(30)
    with torch.no_grad():
        model.train()(x)  # BatchNorm running statistics away from their initial values
        mu, logvar = model.eval().encode(x)
    model.train()  # encode_mu must switch to eval mode itself
    a = encode_mu(model, x, "cpu")
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (30, *model.latent_shape)
    assert not model.training
    np.testing.assert_array_equal(a, encode_mu(model, x, "cpu"))  # deterministic
    np.testing.assert_array_equal(a, mu.numpy())  # model.encode(x)[0] in eval mode
    np.testing.assert_allclose(encode_mu(model, x, "cpu", batch_size=7), a, rtol=0, atol=1e-6)
    # a sample mu + sigma * eps would be far from mu: the test above can tell them apart
    sigma = torch.exp(0.5 * logvar)
    sample = (mu + sigma * torch.randn_like(mu)).numpy()
    assert sigma.min() > 0.5 and np.abs(sample - a).mean() > 0.3


def _fit(seed, images):
    model, _ = train_vae("spatial", images, {**ARCH["spatial"], **TRAIN}, seed=seed, device="cpu", log=lambda m: None)
    cells = to_cells(encode_mu(model, images, "cpu"))
    return model, cells, EuclideanKMeans(8, n_iter=10, seed=seed).fit(cells).cluster_centers_


def test_seed_decides_the_trained_model_and_its_codebook():
    images = _images(80)
    model_a, cells_a, book_a = _fit(0, images)
    model_b, cells_b, book_b = _fit(0, images)
    model_c, cells_c, book_c = _fit(1, images)
    init = [
        train_vae(
            "spatial", images, {**ARCH["spatial"], **TRAIN, "epochs": 0}, seed=seed, device="cpu", log=lambda m: None
        )[0].state_dict()
        for seed in (0, 0, 1)
    ]
    assert all(torch.equal(init[0][k], init[1][k]) for k in init[0])
    kernels = [k for k in init[0] if k.endswith("weight") and init[0][k].ndim > 1]
    assert kernels and all(not torch.equal(init[0][k], init[2][k]) for k in kernels)  # the seed sets the init
    a, b, c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: the same model, bit for bit
    np.testing.assert_array_equal(book_a, book_b)  # ... and the same codebook
    weights = [k for k in a if a[k].is_floating_point() and "running" not in k]
    assert all(not torch.equal(a[k], c[k]) for k in weights)  # another seed: other weights everywhere
    assert np.abs(cells_a - cells_c).mean() > 0.05  # 0.43 here; 0.006 if only the split followed the seed
    assert not np.allclose(book_a, book_c, atol=1e-3)
    # the k-means seed matters on its own: the same latents, another seed, another codebook
    other = EuclideanKMeans(8, n_iter=10, seed=1).fit(cells_a).cluster_centers_
    assert not np.allclose(np.sort(book_a, 0), np.sort(other, 0), atol=1e-3)


def test_epoch_sums_kept_on_the_device_are_the_python_float_sums():
    """geovq.train.Sums adds float32 step values in float64, as summing their .item() values did:
    the same numbers, bit for bit (the per-epoch loss columns did not move with it)."""
    from geovq.train import Sums

    rng = np.random.default_rng(0)
    steps = [torch.tensor(rng.normal(size=3) * 10.0 ** rng.integers(-3, 5), dtype=torch.float32) for _ in range(500)]
    sums, python = Sums(3, "cpu"), np.zeros(3)
    for v in steps:
        sums.add(*v)
        python += np.array([x.item() for x in v])
    np.testing.assert_array_equal(sums.numpy(), python)


@pytest.mark.parametrize("variant", ["spatial", "vanilla"])
def test_channels_last_training_is_the_same_training_up_to_float_order(variant, monkeypatch):
    """The conv nets train in channels-last layout (about 1.5-2x faster here): the same function, the
    same steps and the same noise draws, so an epoch's losses and the trained encoder's means equal the
    default layout's up to the order of float sums. The training losses (batch statistics) agree to
    ~1e-8 relative (bound 1e-5); the weights do not: Adam turns the rounding noise of gradients that
    are zero in exact arithmetic (a conv bias before BatchNorm) into steps of size lr, and eval-mode
    BatchNorm's running means follow those biases with a lag, so the validation loss and the encoder's
    means agree to ~1e-3 only (bound 1e-2). The vanilla MLP VAE is untouched: bit for bit."""
    import geovq.train

    x = _images(120)
    runs = {}
    for layout in ("channels_last", "default"):
        if layout == "default":
            monkeypatch.setattr(geovq.train, "channels_last", lambda m: m)
        model, rows = train_vae(variant, x, {**ARCH[variant], **TRAIN}, seed=1, device="cpu", log=lambda m: None)
        runs[layout] = (rows[0], encode_mu(model, x, "cpu"))
    (ra, mu_a), (rb, mu_b) = runs["channels_last"], runs["default"]
    if variant == "vanilla":
        assert ra == {**rb, "seconds": ra["seconds"]} and np.array_equal(mu_a, mu_b)
        return
    for key in ("train_neg_elbo", "train_recon", "train_kl"):
        np.testing.assert_allclose(ra[key], rb[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(ra["val_neg_elbo"], rb["val_neg_elbo"], rtol=1e-2)
    np.testing.assert_allclose(mu_a, mu_b, rtol=1e-2, atol=1e-2)


def test_fused_upsample_conv_training_is_the_same_training_up_to_float_order(monkeypatch):
    """The spatial decoder trains with each upsample + conv fused into one conv on the small map
    (geovq.models.upsample2x_conv3x3; a default spatial VAE step 0.64x as long): the same function
    and noise draws, so as with channels-last layout the training losses agree to float rounding and
    the weights, through Adam and the conv biases before BatchNorm, to ~1e-3 (bounds as above)."""
    import geovq.models

    x = _images(120)
    runs = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(geovq.models, "upsample_conv_fuses", lambda *a: False)
        model, rows = train_vae("spatial", x, {**ARCH["spatial"], **TRAIN}, seed=1, device="cpu", log=lambda m: None)
        runs[fused] = (rows[0], encode_mu(model, x, "cpu"))
    (ra, mu_a), (rb, mu_b) = runs[True], runs[False]
    assert ra["train_recon"] != rb["train_recon"]  # the fused path ran: its rounding differs
    for key in ("train_neg_elbo", "train_recon", "train_kl"):
        np.testing.assert_allclose(ra[key], rb[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(ra["val_neg_elbo"], rb["val_neg_elbo"], rtol=1e-2)
    np.testing.assert_allclose(mu_a, mu_b, rtol=1e-2, atol=1e-2)
