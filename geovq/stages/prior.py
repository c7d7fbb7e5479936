"""Stages of rules/prior.smk: code priors, samples drawn from them and their quality.

Inputs are checked before anything is written; every output is written atomically.
"""

from __future__ import annotations

import numpy as np

from geovq.artifacts import as_uint8, load_codes, read_classifier, write_csv
from geovq.io import GeovqError, load_json, load_npz, save_json, save_npz
from geovq.stages.runner import device_of, log_result

UNIGRAM_ALPHA = 1.0  # add-one (Laplace) smoothing of the train codes' unigram baseline


def train_prior(inp, out, params, log):
    """The prior over one quantizer's codes: class-conditional as configured (prior.conditional), but
    unconditional for a dataset without labels."""
    from geovq.data import has_labels, subset_indices
    from geovq.device import seed_everything
    from geovq.prior import check_codes, nll_bits, save_prior, train_prior as fit, unigram_bits

    seed_everything(params.seed)
    device = device_of(params)
    cfg = dict(params.prior)
    train = load_codes(inp.codes_train)
    if cfg["conditional"] and not has_labels(train["labels"]):
        log("the dataset has no labels: the prior is unconditional (prior.conditional does not apply)")
        cfg["conditional"] = False
    K = int(train["K"])
    test = load_codes(inp.codes_test, K)
    if int(test["K"]) != K:
        raise GeovqError(f"{inp.codes_test}: K={int(test['K'])} but {inp.codes_train} has K={K}")
    if test["codes"].shape[1:] != train["codes"].shape[1:]:
        raise GeovqError(
            f"{inp.codes_test}: grid {test['codes'].shape[1:]} disagrees with the training "
            f"codes' grid {train['codes'].shape[1:]}"
        )
    keep = subset_indices(len(train["codes"]), cfg["train_images"], params.seed)
    log(
        f"{params.quantizer} codes: {len(keep)} of {len(train['codes'])} training grids "
        f"{train['codes'].shape[1:]}, K={K}"
    )
    model, rows = fit(train["codes"][keep], train["labels"][keep], K, cfg, seed=params.seed, device=device, log=log)
    check_codes(model, test["codes"], str(inp.codes_test))
    bits_token, bits_image = nll_bits(model, test["codes"], test["labels"], device=device)
    # The context-free baseline on the prior's own training codes: what code frequencies alone give.
    unigram = unigram_bits(train["codes"][keep], test["codes"], K, alpha=UNIGRAM_ALPHA)
    class_unigram = (
        unigram_bits(
            train["codes"][keep],
            test["codes"],
            K,
            alpha=UNIGRAM_ALPHA,
            train_labels=train["labels"][keep],
            test_labels=test["labels"],
        )
        if model.conditional
        else None
    )
    log(
        f"test NLL {bits_token:.4f} bits/token, {bits_image:.3f} bits/image on {len(test['codes'])} grids; "
        f"train unigram {unigram:.4f} bits/token: context gain {unigram - bits_token:.4f}"
    )
    save_prior(out.model, model, dataset=params.dataset, quantizer=params.quantizer)
    write_csv(out.losses, rows)
    save_json(
        out.nll,
        {
            "dataset": params.dataset,
            "variant": params.variant,
            "quantizer": params.quantizer,
            "seed": params.seed,
            "K": K,
            "tokens_per_image": model.config.block_size,
            "conditional": model.conditional,
            "test_bits_per_token": bits_token,
            "test_bits_per_image": bits_image,
            "uniform_bits_per_token": float(np.log2(K)),
            "test_unigram_bits_per_token": unigram,
            "test_unigram_bits_per_image": unigram * model.config.block_size,
            "context_gain_bits_per_token": unigram - bits_token,
            "test_class_unigram_bits_per_token": class_unigram,
            "unigram_smoothing": f"add-{UNIGRAM_ALPHA:g} on the prior's {len(keep)} training grids",
            "n_test_images": int(len(test["codes"])),
            "epochs": len(rows),
            "best_epoch": max(r["epoch"] for r in rows if r["best"]),
        },
    )


def _decoder_and_codebook(inp, params, prior_cfg, device):
    """Decoder model and codebook, checked against each other and against the prior's K and grid."""
    from geovq.vqvae import load_decoder

    decoder = load_decoder(inp.decoder, device, dataset=params.dataset)
    cb = load_npz(inp.codebook, ("codebook", "K"))
    codebook = cb["codebook"]
    C, H, W = decoder.latent_shape
    if codebook.ndim != 2 or codebook.shape[1] != C:
        raise GeovqError(f"{inp.codebook}: codebook {codebook.shape} does not have the decoder's {C} latent channels")
    if prior_cfg is not None:
        if int(cb["K"]) != prior_cfg.K or len(codebook) != prior_cfg.K:
            raise GeovqError(
                f"{inp.codebook}: K={int(cb['K'])} ({len(codebook)} rows) disagrees with the prior's K={prior_cfg.K}"
            )
        if tuple(prior_cfg.grid) != (H, W):
            raise GeovqError(
                f"{inp.prior}: prior grid {tuple(prior_cfg.grid)} disagrees with the decoder's latent grid {(H, W)}"
            )
    return decoder, codebook


def sample_prior(inp, out, params, log):
    from torchvision.utils import make_grid, save_image

    from geovq.codebook import quantize
    from geovq.device import seed_everything
    from geovq.io import atomic_path
    from geovq.prior import load_prior, sample
    from geovq.train import decode

    gen = seed_everything(params.seed)
    device = device_of(params)
    cfg = dict(params.sample)
    prior = load_prior(inp.prior, device, dataset=params.dataset)
    decoder, codebook = _decoder_and_codebook(inp, params, prior.config, device)
    n = cfg["n"]
    labels = np.arange(n) % prior.config.n_classes if prior.conditional else None
    codes = sample(prior, n, labels=labels, temperature=cfg["temperature"], top_k=cfg["top_k"], generator=gen)
    images = as_uint8(decode(decoder, quantize(codebook, codes), device))
    log(f"{n} samples: codes {codes.shape}, {len(np.unique(codes))} distinct codes used, images {tuple(images.shape)}")
    arrays = {"codes": codes, "images": images.numpy(), "K": np.int64(prior.config.K)}
    if labels is not None:
        arrays["labels"] = labels.astype(np.int64)
    save_npz(out.samples, **arrays)
    # Conditional: one column per class (labels cycle over the classes); else a 10-wide grid.
    nrow = prior.config.n_classes if prior.conditional else 10
    shown = images[: min(n, 10 * nrow)].float() / 255.0
    with atomic_path(out.png) as tmp:
        save_image(make_grid(shown, nrow=nrow, padding=2, pad_value=1.0), tmp)


def sample_quality(inp, out, params, log):
    """Prior samples and quantized reconstructions of test half A against real test half B, at the
    same n as the floor (fd_reference): Fréchet distance with its bootstrap interval, KID; the class
    accuracy of the reconstructions over every coded test image and of class-conditional samples
    (None where the classifier learnt rotations: the dataset has no labels)."""
    from geovq.artifacts import load_fd_reference, positions
    from geovq.classifier import class_accuracy, features_and_predictions
    from geovq.codebook import quantize
    from geovq.frechet import fd_kid, named
    from geovq.train import decode

    device = device_of(params)
    clf = read_classifier(inp, params, device)
    ref = load_fd_reference(inp.fd_reference)
    n_fd = int(ref["n_fd"])
    samples = load_npz(inp.samples, ("codes", "images", "K"))
    codes = load_codes(inp.codes_test)
    decoder, codebook = _decoder_and_codebook(inp, params, None, device)
    if len(codebook) != int(codes["K"]):
        raise GeovqError(f"{inp.codebook}: {len(codebook)} codes but {inp.codes_test} has K={int(codes['K'])}")
    if len(samples["images"]) < n_fd:
        raise GeovqError(f"{inp.samples}: {len(samples['images'])} samples, fewer than the n_fd={n_fd} test images")
    in_a = positions(codes["image_index"], ref["a"], f"{inp.codes_test}: the coded images lack test half A")
    nll = load_json(inp.nll)
    recon = as_uint8(decode(decoder, quantize(codebook, codes["codes"]), device))
    sample_feats, sample_pred = features_and_predictions(clf, samples["images"], device)
    recon_feats, recon_pred = features_and_predictions(clf, recon, device)
    result = {
        "dataset": params.dataset,
        "variant": params.variant,
        "quantizer": params.quantizer,
        "seed": params.seed,
        "K": int(codes["K"]),
        "n_samples": int(len(sample_feats)),
        "n_quant_recon_images": int(len(recon)),
        "n_fd": n_fd,
        # samples are independent draws: the first n_fd are a random subset
        **named(fd_kid(sample_feats[:n_fd], ref["features_b"]), "samples_test"),
        **named(fd_kid(recon_feats[in_a], ref["features_b"]), "quant_recon_test"),
        "quant_recon_accuracy": class_accuracy(clf, recon_pred, codes["labels"]),
        "test_bits_per_token": nll["test_bits_per_token"],
        "test_bits_per_image": nll["test_bits_per_image"],
    }
    if "labels" in samples:  # does a sample drawn for class c look like class c?
        result["conditional_accuracy"] = class_accuracy(clf, sample_pred, samples["labels"])
    log_result(log, result)
    save_json(out.quality, result)
