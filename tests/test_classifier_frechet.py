"""Fréchet distance against closed forms and SciPy; the classifier, its checkpoint and the quality stages."""

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from geovq.frechet import frechet_distance, frechet_from_stats, gaussian_stats
from geovq.io import GeovqError, load_json, save_json, save_npz


# tiny models: one thread is faster and steadier on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- Fréchet distance
def test_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_grows_monotonically_with_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6))
    noise = rng.normal(size=x.shape)
    fds = [frechet_distance(x, x + s * noise) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert fds[0] == pytest.approx(0.0, abs=1e-8)
    assert all(a < b for a, b in zip(fds, fds[1:])), fds


def test_closed_form_for_commuting_gaussians():
    # diagonal covariances: ||m1 - m2||^2 + sum (sqrt a - sqrt b)^2
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_from_stats(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_from_stats([0.5], [[4.0]], [2.0], [[1.0]]) == pytest.approx(1.5**2 + 1.0, rel=1e-10)


def test_matches_a_direct_scipy_computation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.3
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # the symmetric form tr((S1^1/2 S2 S1^1/2)^1/2) equals tr((S1 S2)^1/2) and avoids a non-symmetric sqrtm
    r1 = scipy.linalg.sqrtm(s1).real
    expected = (
        ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    mu, sigma = gaussian_stats(a)
    assert np.allclose(mu, m1) and np.allclose(sigma, s1)


def test_rank_deficient_features_give_a_finite_distance():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(10, 40))  # fewer samples than features
    a[:, 0] = b[:, 0] = 0.0  # a dead feature
    fd = frechet_distance(a, b)
    # reference: the symmetric form through eigendecompositions, exact for PSD matrices
    (m1, s1), (m2, s2) = gaussian_stats(a), gaussian_stats(b)

    def psd_sqrt(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = psd_sqrt(s1)
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(psd_sqrt(r1 @ s2 @ r1))
    assert np.isfinite(fd) and fd == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a[:1], b)


# ---------------------------------------------------------------- classifier
def _prepared(tmp_path, n_train=1000, n_test=200):
    from geovq.data import prepare

    paths = SimpleNamespace(train=tmp_path / "data/train.npz", test=tmp_path / "data/test.npz")
    prepare("synthetic", paths.train, paths.test, options={"n_train": n_train, "n_test": n_test, "size": 16})
    return paths


CLF = {
    "channels": [8, 16],
    "feature_dim": 32,
    "epochs": 4,
    "batch_size": 32,
    "lr": 3e-3,
    "val_fraction": 0.1,
    "seed": 0,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The train_classifier stage on synthetic shapes: (paths, outputs)."""
    from geovq.stages.classifier import train_classifier

    tmp = tmp_path_factory.mktemp("clf")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = _prepared(tmp)
    out = SimpleNamespace(
        model=tmp / "classifier/model.pt", metrics=tmp / "classifier/metrics.json", losses=tmp / "classifier/losses.csv"
    )
    train_classifier(paths, out, SimpleNamespace(dataset="synthetic", classifier=CLF, device="cpu"), lambda m: None)
    torch.set_num_threads(n)
    return paths, out, tmp


def test_classifier_learns_and_gives_features(trained):
    from geovq.classifier import features, load_classifier
    from geovq.data import load_prepared

    paths, out, _ = trained
    metrics = load_json(out.metrics)
    assert metrics["test_accuracy"] > 0.9 and metrics["n_test_images"] == 200
    assert out.losses.read_text().splitlines()[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc")
    model = load_classifier(out.model, dataset="synthetic")
    x, _ = load_prepared(paths.test)
    f = features(model, x[:50])
    assert f.shape == (50, 32) and np.isfinite(f).all()
    u8 = (x[:50] * 255).round().to(torch.uint8)
    assert np.allclose(features(model, u8), f, atol=1e-5)  # uint8 images are scaled to [0, 1]


def test_classifier_for_another_dataset_is_a_one_line_error(trained):
    from geovq.classifier import load_classifier

    with pytest.raises(GeovqError) as e:
        load_classifier(trained[1].model, dataset="mnist")
    assert str(e.value).endswith("classifier checkpoint is for dataset 'synthetic', expected 'mnist'")
    assert "\n" not in str(e.value)


TEST_IMAGES = 150  # params.codebook["test_images"]: the test images that get codes (of 200)


def _quality_inputs(tmp, paths, classifier):
    """A spatial VAE (briefly trained, so that its decodes get varied predictions), its latents, a
    codebook of K=16 latent cells, the codes of exactly the test images the stages score (the nearest
    codebook rows of their latents, as a quantizer writes them), samples with labels, nll.json."""
    from geovq.data import load_prepared
    from geovq.artifacts import code_subset
    from geovq.train import encode_mu, save_vae, train_vae

    arch = {"latent_channels": 2, "grid": 4, "channels": [8, 8]}
    train_x, _ = load_prepared(paths.train)
    vae, _ = train_vae(
        "spatial",
        train_x,
        {**arch, "epochs": 10, "batch_size": 32, "lr": 1e-2, "beta": 0.1, "val_fraction": 0.1},
        seed=0,
        device="cpu",
        log=lambda m: None,
    )
    save_vae(tmp / "vae.pt", vae, "spatial", arch, dataset="synthetic", image_shape=(1, 16, 16))
    x, y = load_prepared(paths.test)
    mu = encode_mu(vae, x, "cpu")
    save_npz(tmp / "latents_test.npz", mu=mu, labels=y.numpy())
    rng = np.random.default_rng(0)
    cells = mu.transpose(0, 2, 3, 1).reshape(-1, 2)
    codebook = cells[rng.choice(len(cells), 16, replace=False)].astype(np.float32)
    save_npz(tmp / "codebook.npz", codebook=codebook, K=np.int64(16))
    idx = code_subset(len(x), TEST_IMAGES, 0, "test")
    nearest = ((cells[:, None] - codebook[None]) ** 2).sum(-1).argmin(1).reshape(len(x), 4, 4)
    save_npz(tmp / "codes_test.npz", codes=nearest[idx], image_index=idx, labels=y.numpy()[idx], K=np.int64(16))
    # "samples": the decodes of 40 other images' codes, labelled with those images' classes
    pick = rng.choice(len(x), 40, replace=False)
    with torch.no_grad():
        images = (vae.decode(torch.from_numpy(codebook[nearest[pick]].transpose(0, 3, 1, 2))) * 255).round().byte()
    save_npz(tmp / "samples.npz", codes=nearest[pick], images=images.numpy(), labels=y.numpy()[pick], K=np.int64(16))
    save_json(tmp / "nll.json", {"test_bits_per_token": 2.5, "test_bits_per_image": 40.0})
    return SimpleNamespace(
        test=paths.test,
        train=paths.train,
        classifier=classifier,
        samples=tmp / "samples.npz",
        codebook=tmp / "codebook.npz",
        codes_test=tmp / "codes_test.npz",
        decoder=tmp / "vae.pt",
        model=tmp / "vae.pt",
        latents_test=tmp / "latents_test.npz",
        nll=tmp / "nll.json",
    )


def _fd_scipy(a, b):
    """Fréchet distance in the symmetric form tr((S1^1/2 S2 S1^1/2)^1/2), by scipy.linalg.sqrtm."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU features: singular covariances, still PSD
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        r1 = scipy.linalg.sqrtm(s1).real
        covmean = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    return ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


# geovq.frechet adds 1e-6 to singular covariances' diagonals (as pytorch-fid): ~1e-4 relative here
FD_REL = 1e-3


def test_sample_and_recon_quality_stages(trained):
    from geovq.classifier import load_classifier
    from geovq.data import load_prepared, subset_indices
    from geovq.io import load_npz
    from geovq.stages.classifier import recon_quality
    from geovq.stages.prior import sample_quality
    from geovq.train import load_vae

    paths, clf_out, tmp = trained
    inp = _quality_inputs(tmp, paths, clf_out.model)
    params = SimpleNamespace(
        dataset="synthetic",
        variant="spatial",
        quantizer="kmeans",
        seed=0,
        device="cpu",
        codebook={"test_images": TEST_IMAGES},
    )
    sample_quality(inp, SimpleNamespace(quality=tmp / "q/sample_quality.json"), params, lambda m: None)
    q = json.loads((tmp / "q/sample_quality.json").read_text())
    recon_quality(inp, SimpleNamespace(quality=tmp / "vae/recon_quality.json"), params, lambda m: None)
    r = json.loads((tmp / "vae/recon_quality.json").read_text())

    # The oracle: the images each set should hold, built here from the files (codebook rows,
    # the decoder, the seeded subsets), their classifier features and predictions in one batch,
    # and Fréchet distances by scipy.linalg.sqrtm.
    clf, vae = load_classifier(clf_out.model, dataset="synthetic"), load_vae(inp.model, dataset="synthetic")
    test_x, test_y = load_prepared(paths.test)
    train_x, _ = load_prepared(paths.train)
    codes, samples = load_npz(inp.codes_test), load_npz(inp.samples)
    codebook, mu = load_npz(inp.codebook)["codebook"], load_npz(inp.latents_test)["mu"]

    def u8(z):  # decoded means of latent grids, stored as 8-bit images
        with torch.no_grad():
            return (vae.decode(torch.as_tensor(z, dtype=torch.float32)) * 255).round().clamp(0, 255).byte()

    def feats(images):
        images = torch.as_tensor(images)
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        with torch.no_grad():
            f = clf.features(images)
            return f.double().numpy(), clf.head(f).argmax(1).numpy()

    real, real_pred = feats(test_x)
    quant, quant_pred = feats(u8(codebook[codes["codes"]].transpose(0, 3, 1, 2)))
    cont, cont_pred = feats(u8(mu[codes["image_index"]]))  # the continuous decodes of the coded images
    drawn, drawn_pred = feats(samples["images"])
    train_real, _ = feats(train_x[subset_indices(len(train_x), len(test_x), 0)])

    assert q["n_samples"] == 40 and q["n_real_test_images"] == r["n_real_test_images"] == 200
    assert q["n_quant_recon_images"] == r["n_cont_recon_images"] == TEST_IMAGES  # the same coded images
    assert q["fd_samples_real"] == pytest.approx(_fd_scipy(drawn, real), rel=FD_REL)
    assert q["fd_quant_recon_real"] == pytest.approx(_fd_scipy(quant, real), rel=FD_REL)
    assert q["quant_recon_accuracy"] == pytest.approx(np.mean(quant_pred == test_y.numpy()[codes["image_index"]]))
    assert q["conditional_accuracy"] == pytest.approx(np.mean(drawn_pred == samples["labels"]))
    assert q["test_bits_per_token"] == 2.5 and q["test_bits_per_image"] == 40.0
    assert r["fd_cont_recon_real"] == pytest.approx(_fd_scipy(cont, real), rel=FD_REL)
    assert r["fd_real_train_real"] == pytest.approx(_fd_scipy(train_real, real), rel=FD_REL)
    assert r["cont_recon_accuracy"] == pytest.approx(np.mean(cont_pred == test_y.numpy()[codes["image_index"]]))
    assert (
        r["real_test_accuracy"] == pytest.approx(np.mean(real_pred == test_y.numpy())) and r["real_test_accuracy"] > 0.9
    )
    # predictions vary (so the accuracies depend on which label goes with which image)
    assert min(len(set(p.tolist())) for p in (quant_pred, cont_pred, drawn_pred)) >= 2
    # two real sets are much closer than a barely trained VAE's reconstructions are to real images
    assert r["fd_real_train_real"] < r["fd_cont_recon_real"]

    # a classifier for another dataset: one line, nothing written
    other = tmp / "other_classifier.pt"
    ck = torch.load(clf_out.model, weights_only=False)
    torch.save({**ck, "dataset": "mnist"}, other)
    bad = SimpleNamespace(**{**vars(inp), "classifier": other})
    for stage, path in ((sample_quality, tmp / "bad/sample_quality.json"), (recon_quality, tmp / "bad/recon.json")):
        with pytest.raises(GeovqError, match="is for dataset 'mnist', expected 'synthetic'"):
            stage(bad, SimpleNamespace(quality=path), params, print)
    assert not (tmp / "bad").exists()
