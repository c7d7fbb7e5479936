"""Fréchet distance and KID against closed forms, SciPy and torchmetrics; the classifier, its checkpoint
and the quality stages (real test halves A and B, everything scored against B at one n)."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from geovq.frechet import (
    fd_kid,
    frechet_bootstrap,
    frechet_distance,
    frechet_from_stats,
    gaussian_stats,
    kernel_distance,
    mmd2_unbiased,
)
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


def test_closed_form_for_non_commuting_gaussians_at_large_n():
    # S1 = a I and S2 = Q diag(lam) Q^T (a random rotation): tr((S1 S2)^1/2) = sqrt(a) sum sqrt(lam)
    rng = np.random.default_rng(5)
    d, n, a = 4, 200_000, 2.0
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.array([0.25, 1.0, 3.0, 6.0])
    s2 = (q * lam) @ q.T
    m1, m2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    expected = m2 @ m2 + d * a + lam.sum() - 2 * np.sqrt(a) * np.sqrt(lam).sum()
    x = rng.normal(size=(n, d)) * np.sqrt(a)
    y = m2 + rng.normal(size=(n, d)) @ np.linalg.cholesky(s2).T
    assert frechet_from_stats(m1, a * np.eye(d), m2, s2) == pytest.approx(expected, rel=1e-10)
    # sampling error of FD at n = 2e5 here: sd ~ 0.01 of a distance ~ 5.8
    assert frechet_distance(x, y) == pytest.approx(expected, abs=0.05)


class _Identity(torch.nn.Module):
    """A "feature extractor" for torchmetrics that returns its input: the features are given."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_fd_equals_torchmetrics_fid_on_the_same_features(rank_deficient):
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(6)
    d = 24
    a = np.maximum(rng.normal(size=(600, d)) @ rng.normal(size=(d, d)), 0)  # ReLU features
    b = np.maximum(rng.normal(size=(500, d)) @ rng.normal(size=(d, d)) + 0.5, 0)
    if rank_deficient:
        a, b = a[:15], b[:12]  # fewer samples than features
        a[:, :3] = b[:, :3] = 0.0  # dead units
    fid = FrechetInceptionDistance(feature=_Identity(d), reset_real_features=True)
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b), real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_bootstrap_interval_has_the_spread_of_fd_over_fresh_samples():
    # the bootstrap's 95 % half width, in sd, on 8 data sets against the sd of FD over 200 fresh
    # pairs of samples (ratio 0.92 here; a 90 % interval would read 0.78)
    d, n = 4, 800
    mix = np.random.default_rng(7).normal(size=(d, d))

    def pair(seed):
        r = np.random.default_rng(seed)
        return r.normal(size=(n, d)) @ mix, r.normal(size=(n, d)) @ mix * 1.3 + 0.4

    sd = np.std([frechet_distance(*pair(100 + i)) for i in range(200)], ddof=1)
    half_widths = []
    for i in range(8):
        x, y = pair(1000 + i)
        lo, hi = frechet_bootstrap(x, y, seed=i)
        assert lo < frechet_distance(x, y) < hi
        half_widths.append((hi - lo) / 2 / 1.96)
    assert 0.8 < np.mean(half_widths) / sd < 1.25, (np.mean(half_widths), sd)
    assert frechet_bootstrap(x, y, seed=7) == (lo, hi)  # seeded


def test_bootstrap_interval_brackets_the_estimate_with_many_features():
    # 64 ReLU features at n = 400: resampled rows inflate FD, and the plain percentile interval of
    # the resampled distances would lie wholly above the estimate
    rng = np.random.default_rng(10)
    d, n = 64, 400
    x = np.maximum(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), 0)
    y = np.maximum(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.3, 0)
    scores = fd_kid(x, y)  # (one BLAS thread: hundreds of small products)
    assert scores["fd_lo"] < scores["fd"] < scores["fd_hi"]


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(8)
    d = 16
    mix = rng.normal(size=(d, d)) / 4
    x, y = rng.normal(size=(2000, d)) @ mix, rng.normal(size=(2000, d)) @ mix
    kid, std = kernel_distance(x, y)
    assert abs(kid) < std, (kid, std)  # unbiased: 0 within the spread over subsets
    kid_shift, std_shift = kernel_distance(x, y + 0.25)
    assert kid_shift > 10 * std_shift and kid_shift > 10 * abs(kid)
    assert kernel_distance(x, y, seed=3) == kernel_distance(x, y, seed=3)
    # a set no larger than the subset size: subsets of half of it, so the spread is not 0
    small = kernel_distance(x[:500], y[:500])
    assert small[1] > 0


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_on_the_same_features_and_subsets(monkeypatch):
    import torchmetrics.image.kid as tm_kid
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(9)
    d = 12
    a, b = rng.normal(size=(500, d)), rng.normal(size=(450, d)) * 1.1 + 0.1  # subsets of 200 <= half of each
    ours = kernel_distance(a, b, subsets=7, subset_size=200, seed=4)
    # torchmetrics draws a permutation of the real set, then one of the fake set, per subset: hand it
    # the permutations our seeded generator drew, in the same order
    perms = np.random.default_rng(4)
    monkeypatch.setattr(tm_kid.torch, "randperm", lambda n, **kw: torch.from_numpy(perms.permutation(n)))
    kid = KernelInceptionDistance(feature=_Identity(d), subsets=7, subset_size=200)
    kid.update(torch.from_numpy(a), real=True)
    kid.update(torch.from_numpy(b), real=False)
    mean, std = (float(v) for v in kid.compute())
    assert ours == pytest.approx((mean, std), rel=1e-9)
    assert mmd2_unbiased(a[:200], b[:200]) == pytest.approx(
        float(tm_kid.poly_mmd(torch.from_numpy(a[:200]), torch.from_numpy(b[:200]))), rel=1e-9
    )


def test_fd_kid_needs_sets_of_one_size():
    x = np.random.default_rng(0).normal(size=(50, 3))
    scores = fd_kid(x, x[::-1].copy())
    assert scores["n"] == 50 and scores["fd"] == pytest.approx(0.0, abs=1e-9) and scores["fd_lo"] <= scores["fd_hi"]
    with pytest.raises(ValueError, match="score sets at one n"):
        fd_kid(x, x[:40])


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


# dead ReLU features make the covariances singular, where sqrtm is least accurate
FD_REL = 1e-3


def _quality_stages(tmp, paths, classifier):
    """fd_reference, sample_quality and recon_quality on `_quality_inputs`: (inp, params, sample quality,
    recon quality)."""
    from geovq.stages.classifier import fd_reference, recon_quality
    from geovq.stages.prior import sample_quality

    inp = _quality_inputs(tmp, paths, classifier)
    params = SimpleNamespace(
        dataset="synthetic",
        variant="spatial",
        quantizer="kmeans",
        seed=0,
        device="cpu",
        codebook={"test_images": TEST_IMAGES},
        sample_n=40,  # as many as the samples: n_fd = min(40, 150 // 2)
    )
    fd_reference(inp, SimpleNamespace(reference=tmp / "classifier/fd_reference.npz"), params, lambda m: None)
    inp.fd_reference = tmp / "classifier/fd_reference.npz"
    sample_quality(inp, SimpleNamespace(quality=tmp / "q/sample_quality.json"), params, lambda m: None)
    recon_quality(inp, SimpleNamespace(quality=tmp / "vae/recon_quality.json"), params, lambda m: None)
    return inp, params, load_json(tmp / "q/sample_quality.json"), load_json(tmp / "vae/recon_quality.json")


def test_sample_and_recon_quality_stages(trained):
    from geovq.artifacts import code_subset
    from geovq.classifier import load_classifier
    from geovq.data import load_prepared
    from geovq.io import load_npz
    from geovq.stages.classifier import fd_reference, recon_quality
    from geovq.stages.prior import sample_quality
    from geovq.train import load_vae

    paths, clf_out, tmp = trained
    inp, params, q, r = _quality_stages(tmp, paths, clf_out.model)
    ref = load_npz(inp.fd_reference)

    # The halves, read from the artifact: disjoint, n_fd each, among the coded test images, the
    # same for another seed (the study pairs seeds), never train images.
    test_x, test_y = load_prepared(paths.test)
    coded = code_subset(len(test_x), TEST_IMAGES, 0, "test")
    a, b = ref["a"], ref["b"]
    assert int(ref["n_fd"]) == q["n_fd"] == r["n_fd"] == len(a) == len(b) == 40
    assert not np.intersect1d(a, b).size and np.isin(a, coded).all() and np.isin(b, coded).all()
    seed1 = SimpleNamespace(**{**vars(params), "seed": 1})
    fd_reference(inp, SimpleNamespace(reference=tmp / "seed1/fd_reference.npz"), seed1, lambda m: None)
    again = load_npz(tmp / "seed1/fd_reference.npz")
    assert np.array_equal(again["a"], a) and np.array_equal(again["b"], b)

    # The oracle: the images each set should hold, built here from the files (codebook rows,
    # the decoder, the halves), their classifier features and predictions in one batch, and
    # Fréchet distances by scipy.linalg.sqrtm.
    clf, vae = load_classifier(clf_out.model, dataset="synthetic"), load_vae(inp.model, dataset="synthetic")
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

    real_a, _ = feats(test_x[a])
    real_b, _ = feats(test_x[b])
    quant, quant_pred = feats(u8(codebook[codes["codes"]].transpose(0, 3, 1, 2)))
    quant_a, _ = feats(u8(codebook[codes["codes"][np.isin(codes["image_index"], a)]].transpose(0, 3, 1, 2)))
    cont, cont_pred = feats(u8(mu[codes["image_index"]]))  # the continuous decodes of the coded images
    cont_a, _ = feats(u8(mu[a]))
    drawn, drawn_pred = feats(samples["images"])

    np.testing.assert_allclose(ref["features_a"], real_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref["features_b"], real_b, rtol=1e-5, atol=1e-6)
    assert q["n_samples"] == 40
    assert q["n_quant_recon_images"] == r["n_cont_recon_images"] == TEST_IMAGES  # the same coded images
    # every set against half B at n_fd; reconstructions are of half A's images
    assert r["fd_floor_test_halves"] == pytest.approx(_fd_scipy(real_a, real_b), rel=FD_REL)
    assert q["fd_samples_test"] == pytest.approx(_fd_scipy(drawn[:40], real_b), rel=FD_REL)
    assert q["fd_quant_recon_test"] == pytest.approx(_fd_scipy(quant_a, real_b), rel=FD_REL)
    assert r["fd_cont_recon_test"] == pytest.approx(_fd_scipy(cont_a, real_b), rel=FD_REL)
    for name, x, res in (
        ("samples_test", drawn[:40], q),
        ("quant_recon_test", quant_a, q),
        ("cont_recon_test", cont_a, r),
    ):
        assert (res[f"kid_{name}"], res[f"kid_{name}_std"]) == pytest.approx(kernel_distance(x, real_b), rel=1e-6)
        interval = frechet_bootstrap(x, real_b)
        assert (res[f"fd_{name}_lo"], res[f"fd_{name}_hi"]) == pytest.approx(interval, rel=FD_REL)
    assert r["kid_floor_test_halves"] == pytest.approx(kernel_distance(real_a, real_b)[0], rel=1e-6)
    assert (r["fd_floor_test_halves_lo"], r["fd_floor_test_halves_hi"]) == pytest.approx(
        frechet_bootstrap(real_a, real_b), rel=FD_REL
    )
    assert q["quant_recon_accuracy"] == pytest.approx(np.mean(quant_pred == test_y.numpy()[codes["image_index"]]))
    assert q["conditional_accuracy"] == pytest.approx(np.mean(drawn_pred == samples["labels"]))
    assert q["test_bits_per_token"] == 2.5 and q["test_bits_per_image"] == 40.0
    assert r["cont_recon_accuracy"] == pytest.approx(np.mean(cont_pred == test_y.numpy()[codes["image_index"]]))
    # predictions vary (so the accuracies depend on which label goes with which image)
    assert min(len(set(p.tolist())) for p in (quant_pred, cont_pred, drawn_pred)) >= 2
    # two real sets are much closer than a barely trained VAE's reconstructions are to real images
    assert r["fd_floor_test_halves"] < r["fd_cont_recon_test"]

    # a classifier for another dataset: one line, nothing written
    other = tmp / "other_classifier.pt"
    ck = torch.load(clf_out.model, weights_only=False)
    torch.save({**ck, "dataset": "mnist"}, other)
    bad = SimpleNamespace(**{**vars(inp), "classifier": other})
    for stage, out in (
        (fd_reference, SimpleNamespace(reference=tmp / "bad/fd_reference.npz")),
        (sample_quality, SimpleNamespace(quality=tmp / "bad/sample_quality.json")),
        (recon_quality, SimpleNamespace(quality=tmp / "bad/recon.json")),
    ):
        with pytest.raises(GeovqError, match="is for dataset 'mnist', expected 'synthetic'"):
            stage(bad, out, params, print)
    assert not (tmp / "bad").exists()


# ---------------------------------------------------------------- images without labels: the rotation task
def test_rotations_are_numpy_rot90():
    from geovq.classifier import rotations

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    turned, which = rotations(x)
    assert turned.shape == (8, 3, 4, 4) and which.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):
        for i in range(2):
            np.testing.assert_array_equal(turned[2 * k + i].numpy(), np.rot90(x[i].numpy(), k, axes=(1, 2)))


def test_task_is_classes_only_with_two_or_more():
    from geovq.classifier import task_of

    assert task_of(torch.tensor([0, 1, 1])) == "classes"
    assert task_of(None) == "rotation" and task_of(torch.zeros(5, dtype=torch.int64)) == "rotation"


def test_classifier_learns_rotations_of_images_without_labels(tmp_path, one_thread):
    """The train_classifier stage on unlabeled triangles (labels UNLABELED): it learns which of 4 turns
    was applied, its test accuracy is over every turn of every test image, metrics.json and the
    checkpoint say task rotation; the quality stages score Fréchet distances and KID on its features
    and leave every class accuracy empty."""
    from geovq.classifier import accuracy, class_accuracy, features, load_classifier
    from geovq.data import UNLABELED, load_prepared, synthetic
    from geovq.stages.classifier import train_classifier

    x, y = synthetic(3000, size=16, channels=1, classes=6, seed=0)
    triangles = x[y == 5]  # apex up: every turn looks different
    paths = SimpleNamespace(train=tmp_path / "data/train.npz", test=tmp_path / "data/test.npz")
    for path, part in ((paths.train, triangles[:400]), (paths.test, triangles[400:])):
        save_npz(path, images=part, labels=np.full(len(part), UNLABELED, np.int64))
    out = SimpleNamespace(
        model=tmp_path / "model.pt", metrics=tmp_path / "metrics.json", losses=tmp_path / "losses.csv"
    )
    params = SimpleNamespace(dataset="synthetic", classifier={**CLF, "epochs": 3}, device="cpu")
    lines = []
    train_classifier(paths, out, params, lines.append)
    metrics = load_json(out.metrics)
    assert metrics["task"] == "rotation" and metrics["test_accuracy"] > 0.9, metrics
    assert any("learns which of 4 rotations" in line for line in lines)
    model = load_classifier(out.model, dataset="synthetic")
    assert model.task == "rotation" and model.n_classes == 4
    test_x, _ = load_prepared(paths.test)
    assert accuracy(model, test_x) == pytest.approx(metrics["test_accuracy"])
    assert features(model, test_x[:7]).shape == (7, CLF["feature_dim"])
    assert class_accuracy(model, np.zeros(3), np.zeros(3)) is None

    _, _, q, r = _quality_stages(tmp_path, paths, out.model)  # codes and samples carry UNLABELED labels
    assert q["quant_recon_accuracy"] is None and q["conditional_accuracy"] is None and r["cont_recon_accuracy"] is None
    assert np.isfinite(
        [q["fd_samples_test"], q["fd_quant_recon_test"], r["fd_cont_recon_test"], q["kid_samples_test"]]
    ).all()
