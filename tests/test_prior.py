"""Code prior: causality, learning a deterministic sequence, the L = 1 categorical case, sampling, bad inputs;
the context-free unigram baseline it is measured against."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geovq.io import GeovqError, load_json, load_npz, save_npz
from geovq.prior import (
    CodePrior,
    PriorConfig,
    check_codes,
    load_prior,
    nll_bits,
    sample,
    save_prior,
    train_prior,
    unigram_bits,
)

TINY = dict(
    conditional=False,
    n_layer=1,
    n_head=2,
    n_embd=32,
    dropout=0.0,
    epochs=12,
    batch_size=32,
    lr=1e-2,
    weight_decay=0.0,
    val_fraction=0.2,
    patience=3,
    train_images=None,
)


# tiny models: one thread is faster and steadier on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


def _sequences(labels, K, L):
    """A different deterministic raster sequence per class (class c: c, c+1, ... mod K)."""
    return (labels[:, None] + np.arange(L)[None]) % K


@pytest.mark.parametrize("conditional", [False, True])
def test_causal_later_tokens_never_change_earlier_logits(conditional):
    torch.manual_seed(0)
    cfg = PriorConfig(K=11, grid=(3, 4), n_classes=3 if conditional else 0, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    model = CodePrior(cfg).eval()
    codes = torch.randint(0, 11, (5, 12))
    labels = torch.tensor([0, 1, 2, 0, 1]) if conditional else None
    base = model(codes, labels)
    assert base.shape == (5, 12, 11)
    for j in (0, 5, 11):
        changed = codes.clone()
        changed[:, j] = (changed[:, j] + 1) % 11
        out = model(changed, labels)
        # Logits at i predict code i from codes < i: positions <= j must not move, later ones must.
        torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1], rtol=0, atol=1e-6)
        if j < 11:
            assert (out[:, j + 1 :] - base[:, j + 1 :]).abs().max() > 1e-4
    if conditional:  # the class enters through the start token, so even the first code depends on it
        other = model(codes, torch.tensor([1, 2, 0, 1, 2]))
        assert (other[:, 0] - base[:, 0]).abs().max() > 1e-4


def test_learns_a_deterministic_sequence():
    codes = np.tile(np.arange(16) % 8, (300, 1)).reshape(300, 4, 4)
    logs = []
    model, rows = train_prior(codes, np.zeros(300, np.int64), 8, TINY, seed=0, device="cpu", log=logs.append)
    assert min(r["val_bits_per_token"] for r in rows) < 0.1
    assert nll_bits(model, codes)[0] < 0.1
    drawn = sample(model, 4, generator=torch.Generator().manual_seed(0))
    assert (drawn == codes[:4]).all()


def test_conditional_prior_learns_class_sequences_including_the_first_code():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    codes = _sequences(labels, 8, 9).reshape(300, 3, 3)
    model, rows = train_prior(
        codes, labels, 8, {**TINY, "conditional": True, "epochs": 15}, seed=0, device="cpu", log=lambda m: None
    )
    per_token, per_image = nll_bits(model, codes, labels)
    assert per_token < 0.15 and per_image == pytest.approx(per_token * 9)
    drawn = sample(model, 6, labels=np.arange(6) % 3, generator=torch.Generator().manual_seed(0))
    assert (drawn.reshape(6, 9) == _sequences(np.arange(6) % 3, 8, 9)).mean() > 0.95


def test_one_code_per_image_is_a_categorical_distribution():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    # class 0 uses codes {0, 1} equally, class 1 always code 3: entropy 1 bit and 0 bits
    codes = np.where(labels == 0, rng.integers(0, 2, 2000), 3).reshape(2000, 1, 1)
    logs = []
    params = {**TINY, "conditional": True, "epochs": 20, "batch_size": 128, "lr": 3e-2}
    model, _ = train_prior(codes, labels, 5, params, seed=0, device="cpu", log=logs.append)
    assert any("categorical distribution" in m for m in logs)
    probs = torch.softmax(model(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 1]))[:, 0], -1)
    assert probs[0, :2].detach().numpy() == pytest.approx([0.5, 0.5], abs=0.06)
    assert probs[1, 3].item() > 0.95
    expected = np.mean(labels == 0) * 1.0  # bits/image = the class-weighted entropy
    assert nll_bits(model, codes, labels)[1] == pytest.approx(expected, abs=0.08)


def test_sample_shape_range_top_k_and_seed():
    torch.manual_seed(0)
    model = CodePrior(PriorConfig(K=7, grid=(2, 3), n_layer=1, n_head=1, n_embd=8)).eval()
    a = sample(model, 50, generator=torch.Generator().manual_seed(3), batch_size=16)
    b = sample(model, 50, generator=torch.Generator().manual_seed(3), batch_size=16)
    assert a.shape == (50, 2, 3) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 7
    assert (a == b).all()  # same seed, same draws
    assert len(np.unique(a.reshape(50, -1), axis=0)) > 10  # a near-uniform untrained prior: varied grids
    prefix = torch.randint(0, 7, (4, 3))
    torch.testing.assert_close(
        model.logits_from_prefix(prefix, last_only=True), model.logits_from_prefix(prefix)[:, -1]
    )
    greedy = sample(model, 5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert (greedy == greedy[0]).all()  # top-1 is deterministic
    with pytest.raises(ValueError, match="temperature"):
        sample(model, 2, temperature=0.0)


def _sample_recomputing_the_prefix(model, n, generator, labels=None):
    """The sampler before key-value caching: every step runs the whole prefix (the oracle)."""
    seq = torch.empty(n, 0, dtype=torch.long)
    y = None if labels is None else torch.as_tensor(labels)
    for _ in range(model.config.block_size):
        probs = torch.softmax(model.logits_from_prefix(seq, y, last_only=True).float(), dim=-1)
        seq = torch.cat([seq, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return seq.view(n, *model.config.grid).numpy()


@pytest.mark.parametrize("conditional", [False, True])
def test_key_value_cached_sampling_equals_recomputing_the_prefix(conditional):
    """Each step's logits through the cache equal the whole prefix's last logits up to float32
    rounding (1e-4 here, with logits of magnitude ~10: attention over 1 query instead of a causal
    T x T product sums in another order), and on the CPU the draws are the very same grids."""
    torch.manual_seed(1)
    cfg = PriorConfig(K=11, grid=(3, 4), n_classes=3 if conditional else 0, n_layer=2, n_head=2, n_embd=16)
    model = CodePrior(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # peaked distributions: the draws depend on the logits
            p.mul_(8.0)
    labels = np.arange(64) % 3 if conditional else None
    y = None if labels is None else torch.as_tensor(labels)
    prefix = torch.randint(0, 11, (64, 11))
    steps = model.next_logits(y, batch=64)
    with torch.no_grad():
        logits = next(steps)
        for t in range(12):
            torch.testing.assert_close(
                logits, model.logits_from_prefix(prefix[:, :t], y, last_only=True), atol=1e-4, rtol=1e-4
            )
            if t < 11:
                logits = steps.send(prefix[:, t])
        cached = sample(model, 64, labels=labels, generator=torch.Generator().manual_seed(5), batch_size=64)
        oracle = _sample_recomputing_the_prefix(model, 64, torch.Generator().manual_seed(5), labels)
    np.testing.assert_array_equal(cached, oracle)


def test_bad_inputs_are_one_line_errors(tmp_path):
    cfg = PriorConfig(K=6, grid=(2, 2), n_classes=2, n_layer=1, n_head=1, n_embd=8)
    model = CodePrior(cfg).eval()
    ok = np.zeros((3, 2, 2), np.int64)
    for bad, match in (
        (ok + 6, r"\[0, 6\)"),
        (np.zeros((3, 2, 3), np.int64), "grid shape"),
        (ok.astype(np.float32), "integer"),
    ):
        with pytest.raises(GeovqError, match=match) as e:
            check_codes(model, bad)
        assert "\n" not in str(e.value)
    with pytest.raises(GeovqError, match="labels are required"):
        nll_bits(model, ok)
    with pytest.raises(GeovqError, match=r"labels must lie in \[0, 2\)"):
        sample(model, 3, labels=[0, 1, 2])
    save_prior(tmp_path / "p.pt", model, dataset="mnist")
    with pytest.raises(GeovqError, match="dataset 'mnist', expected 'cifar10'"):
        load_prior(tmp_path / "p.pt", dataset="cifar10")
    back = load_prior(tmp_path / "p.pt", dataset="mnist")
    x = torch.randint(0, 6, (2, 4))
    torch.testing.assert_close(back(x, torch.tensor([0, 1])), model(x, torch.tensor([0, 1])))


# ---------------------------------------------------------------- unigram baseline
def test_unigram_cross_entropy_of_uniform_codes_is_log2_k():
    # 50 000 train and test tokens over K = 16: within ~0.01 bits of log2 K (sampling error of the
    # empirical test entropy ~0.002, KL of the smoothed train estimate ~K / (2 N ln 2) ~ 0.0002)
    rng = np.random.default_rng(0)
    K = 16
    train, test = rng.integers(0, K, (5000, 10)), rng.integers(0, K, (5000, 10))
    assert unigram_bits(train, test, K) == pytest.approx(math.log2(K), abs=0.01)
    # skewed codes: the entropy of the distribution they were drawn from
    p = np.array([0.5, 0.25, 0.125, 0.125])
    train, test = rng.choice(4, (5000, 10), p=p), rng.choice(4, (5000, 10), p=p)
    assert unigram_bits(train, test, 4) == pytest.approx(1.75, abs=0.01)


def test_unigram_smoothing_and_classes_exactly():
    # add-one: train counts (2, 1, 0) of K = 3 give p = (3, 2, 1) / 6
    train, test = np.array([[0, 0, 1]]), np.array([[2, 0]])
    assert unigram_bits(train, test, 3) == pytest.approx((math.log2(6) + math.log2(2)) / 2)
    assert unigram_bits(train, test, 3, alpha=0.5) == pytest.approx((math.log2(4.5 / 0.5) + math.log2(4.5 / 2.5)) / 2)
    # per class: class 0 uses code 0 only, class 1 code 1 only; a class-blind unigram pays ~1 bit
    labels = np.arange(2000) % 2
    codes = np.repeat(labels[:, None, None], 4, axis=1).repeat(4, axis=2)
    blind = unigram_bits(codes, codes, 2)
    by_class = unigram_bits(codes, codes, 2, train_labels=labels, test_labels=labels)
    assert blind == pytest.approx(1.0, abs=1e-3) and by_class < 1e-3
    with pytest.raises(ValueError, match="for both"):
        unigram_bits(codes, codes, 2, train_labels=labels)


# ---------------------------------------------------------------- stages
def _codes_file(path, codes, labels, K):
    save_npz(path, codes=codes, image_index=np.arange(len(codes)), labels=labels, K=np.int64(K))


def _prior_stage_args(tmp_path, **over):
    prior = {**TINY, "conditional": True, "epochs": 2}
    inp = SimpleNamespace(codes_train=tmp_path / "codes_train.npz", codes_test=tmp_path / "codes_test.npz")
    out = SimpleNamespace(
        model=tmp_path / "prior/model.pt", losses=tmp_path / "prior/losses.csv", nll=tmp_path / "prior/nll.json"
    )
    params = SimpleNamespace(
        dataset="synthetic", variant="spatial", quantizer="kmeans", seed=0, prior=prior, device="cpu"
    )
    return inp, out, params


def test_train_and_sample_prior_stages(tmp_path):
    from geovq.stages.prior import sample_prior, train_prior as stage
    from geovq.train import save_vae
    from geovq.models import build_vae

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    K, grid = 10, (4, 4)
    _codes_file(tmp_path / "codes_train.npz", rng.integers(0, K, (200, *grid)), labels[:200], K)
    # 400 x 16 = 6400 test tokens: the empirical entropy of uniform codes is log2 K within ~0.01 bits
    _codes_file(tmp_path / "codes_test.npz", rng.integers(0, K, (400, *grid)), labels[200:], K)
    inp, out, params = _prior_stage_args(tmp_path)
    stage(inp, out, params, lambda m: None)
    nll = load_json(out.nll)
    assert nll["tokens_per_image"] == 16 and nll["conditional"] and nll["n_test_images"] == 400
    assert nll["test_bits_per_image"] == pytest.approx(16 * nll["test_bits_per_token"])
    # uniformly random codes cannot be predicted: no prior does much better than log2 K on unseen
    # grids (a lower NLL means leaked targets or a wrong unit), and a sane one not much worse
    assert nll["uniform_bits_per_token"] == pytest.approx(math.log2(K))
    assert nll["test_bits_per_token"] == pytest.approx(math.log2(K), abs=0.3)
    # the context-free baseline: the train codes' unigram, on the prior's own training grids
    train = load_npz(inp.codes_train)
    test = load_npz(inp.codes_test)
    assert nll["test_unigram_bits_per_token"] == pytest.approx(unigram_bits(train["codes"], test["codes"], K))
    assert nll["test_unigram_bits_per_image"] == pytest.approx(16 * nll["test_unigram_bits_per_token"])
    gain = nll["test_unigram_bits_per_token"] - nll["test_bits_per_token"]
    assert nll["context_gain_bits_per_token"] == pytest.approx(gain) and abs(gain) < 0.3  # nothing to learn
    assert nll["test_class_unigram_bits_per_token"] == pytest.approx(
        unigram_bits(train["codes"], test["codes"], K, train_labels=train["labels"], test_labels=test["labels"])
    )

    arch = {"latent_channels": 3, "grid": 4, "channels": [4, 4]}
    vae = build_vae("spatial", (1, 16, 16), arch)
    save_vae(tmp_path / "vae.pt", vae, "spatial", arch, dataset="synthetic", image_shape=(1, 16, 16))
    save_npz(tmp_path / "codebook.npz", codebook=rng.normal(size=(K, 3)).astype(np.float32), K=np.int64(K))
    s_inp = SimpleNamespace(prior=out.model, codebook=tmp_path / "codebook.npz", decoder=tmp_path / "vae.pt")
    s_out = SimpleNamespace(samples=tmp_path / "prior/samples.npz", png=tmp_path / "prior/samples.png")
    s_params = SimpleNamespace(
        dataset="synthetic", seed=0, device="cpu", sample={"n": 25, "temperature": 1.0, "top_k": None}
    )
    sample_prior(s_inp, s_out, s_params, lambda m: None)
    d = load_npz(s_out.samples, ("codes", "images", "labels", "K"))
    assert d["codes"].shape == (25, 4, 4) and d["codes"].min() >= 0 and d["codes"].max() < K
    assert d["images"].shape == (25, 1, 16, 16) and d["images"].dtype == np.uint8
    assert (d["labels"] == np.arange(25) % 3).all()
    assert s_out.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a decoder whose latent grid disagrees with the prior: one line, nothing written
    arch7 = {"latent_channels": 3, "grid": 8, "channels": [4]}
    save_vae(
        tmp_path / "vae8.pt",
        build_vae("spatial", (1, 16, 16), arch7),
        "spatial",
        arch7,
        dataset="synthetic",
        image_shape=(1, 16, 16),
    )
    bad_out = SimpleNamespace(samples=tmp_path / "bad/samples.npz", png=tmp_path / "bad/samples.png")
    with pytest.raises(GeovqError, match=r"prior grid \(4, 4\) disagrees with the decoder's latent grid \(8, 8\)"):
        sample_prior(SimpleNamespace(**{**vars(s_inp), "decoder": tmp_path / "vae8.pt"}), bad_out, s_params, print)
    assert not (tmp_path / "bad").exists()


def test_train_prior_stage_on_predictable_codes_is_far_below_uniform(tmp_path):
    from geovq.stages.prior import train_prior as stage

    # each class its own deterministic raster sequence: given the class, every code is known
    rng = np.random.default_rng(2)
    K, n_train, n_test = 10, 300, 100
    labels = rng.integers(0, 3, n_train + n_test)
    codes = _sequences(labels, K, 16).reshape(-1, 4, 4)
    _codes_file(tmp_path / "codes_train.npz", codes[:n_train], labels[:n_train], K)
    _codes_file(tmp_path / "codes_test.npz", codes[n_train:], labels[n_train:], K)
    inp, out, params = _prior_stage_args(tmp_path)
    params.prior = {**params.prior, "epochs": 12}
    stage(inp, out, params, lambda m: None)
    nll = load_json(out.nll)
    assert nll["n_test_images"] == n_test
    assert nll["test_bits_per_token"] < 0.25 < 0.1 * math.log2(K)  # log2 10 = 3.32 bits for uniform codes
    # every code is about as frequent as every other: context (class and earlier codes) buys ~3 bits
    assert nll["test_unigram_bits_per_token"] > 3.0 and nll["context_gain_bits_per_token"] > 2.8
    assert nll["test_bits_per_image"] == pytest.approx(16 * nll["test_bits_per_token"])


def test_train_prior_stage_rejects_codes_out_of_range(tmp_path):
    from geovq.stages.prior import train_prior as stage

    labels = np.zeros(40, np.int64)
    _codes_file(tmp_path / "codes_train.npz", np.full((40, 2, 2), 3), labels, 4)
    _codes_file(tmp_path / "codes_test.npz", np.full((40, 2, 2), 4), labels, 4)  # 4 >= K
    inp, out, params = _prior_stage_args(tmp_path)
    with pytest.raises(GeovqError, match=r"codes_test.npz: codes must lie in \[0, 4\)"):
        stage(inp, out, params, print)
    _codes_file(tmp_path / "codes_test.npz", np.full((40, 2, 3), 1), labels, 4)  # another grid
    with pytest.raises(GeovqError, match=r"grid \(2, 3\) disagrees"):
        stage(inp, out, params, print)
    assert not (tmp_path / "prior").exists()


def test_train_prior_stage_without_labels_is_unconditional(tmp_path):
    """Codes of a dataset without labels (every label UNLABELED): prior.conditional does not apply, the
    prior is unconditional, there is no per-class unigram, and its samples carry no labels."""
    from geovq.data import UNLABELED
    from geovq.stages.prior import train_prior as stage

    rng = np.random.default_rng(3)
    K, grid = 6, (2, 2)
    none = np.full(120, UNLABELED, np.int64)
    _codes_file(tmp_path / "codes_train.npz", rng.integers(0, K, (80, *grid)), none[:80], K)
    _codes_file(tmp_path / "codes_test.npz", rng.integers(0, K, (40, *grid)), none[80:], K)
    inp, out, params = _prior_stage_args(tmp_path)
    assert params.prior["conditional"]
    lines = []
    stage(inp, out, params, lines.append)
    nll = load_json(out.nll)
    assert nll["conditional"] is False and nll["test_class_unigram_bits_per_token"] is None
    assert any("no labels: the prior is unconditional" in line for line in lines)
    assert not load_prior(out.model).conditional
