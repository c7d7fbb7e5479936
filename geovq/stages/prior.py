"""Stages of rules/prior.smk: code priors, samples drawn from them and their quality.

Inputs are checked before anything is written; every output is written atomically.
"""

from __future__ import annotations

import numpy as np

from geovq.artifacts import as_uint8, load_codes, read_classifier, write_csv
from geovq.io import GeovqError, load_json, load_npz, save_json, save_npz
from geovq.stages.runner import device_of, log_result


def train_prior(inp, out, params, log):
    from geovq.data import subset_indices
    from geovq.device import seed_everything
    from geovq.prior import check_codes, nll_bits, save_prior, train_prior as fit

    seed_everything(params.seed)
    device = device_of(params)
    cfg = dict(params.prior)
    train = load_codes(inp.codes_train)
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
    log(f"test NLL {bits_token:.4f} bits/token, {bits_image:.3f} bits/image on {len(test['codes'])} grids")
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
    from geovq.classifier import features_and_predictions
    from geovq.codebook import quantize
    from geovq.data import load_prepared
    from geovq.frechet import frechet_distance
    from geovq.train import decode

    device = device_of(params)
    clf = read_classifier(inp, params, device)
    test_x, _ = load_prepared(inp.test)
    samples = load_npz(inp.samples, ("codes", "images", "K"))
    codes = load_codes(inp.codes_test)
    decoder, codebook = _decoder_and_codebook(inp, params, None, device)
    if len(codebook) != int(codes["K"]):
        raise GeovqError(f"{inp.codebook}: {len(codebook)} codes but {inp.codes_test} has K={int(codes['K'])}")
    nll = load_json(inp.nll)
    recon = as_uint8(decode(decoder, quantize(codebook, codes["codes"]), device))
    real_feats, _ = features_and_predictions(clf, test_x, device)
    sample_feats, sample_pred = features_and_predictions(clf, samples["images"], device)
    recon_feats, recon_pred = features_and_predictions(clf, recon, device)
    result = {
        "dataset": params.dataset,
        "variant": params.variant,
        "quantizer": params.quantizer,
        "seed": params.seed,
        "K": int(codes["K"]),
        "n_samples": int(len(sample_feats)),
        "n_real_test_images": int(len(test_x)),
        "n_quant_recon_images": int(len(recon)),
        "fd_samples_real": frechet_distance(sample_feats, real_feats),
        "fd_quant_recon_real": frechet_distance(recon_feats, real_feats),
        "quant_recon_accuracy": float((recon_pred == codes["labels"]).mean()),
        "test_bits_per_token": nll["test_bits_per_token"],
        "test_bits_per_image": nll["test_bits_per_image"],
    }
    if "labels" in samples:  # does a sample drawn for class c look like class c?
        result["conditional_accuracy"] = float((sample_pred == samples["labels"]).mean())
    log_result(log, result)
    save_json(out.quality, result)
