"""Stages of rules/evaluate.smk: paired test-set metrics per quantizer, and the table over all runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geovq.artifacts import load_codes, load_latents
from geovq.io import GeovqError, atomic_path, load_npz, save_json, save_npz
from geovq.stages.runner import device_of


def _fd_columns(what):
    return [f"fd_{what}", f"fd_{what}_lo", f"fd_{what}_hi", f"kid_{what}", f"kid_{what}_std"]


# Keys of the prior's and the samples' results that describe the quantizer's own codes only
GENERATIVE = (
    "test_bits_per_token",
    "test_bits_per_image",
    "test_unigram_bits_per_token",
    "test_unigram_bits_per_image",
    "context_gain_bits_per_token",
    "test_class_unigram_bits_per_token",
    *_fd_columns("samples_test"),
    *_fd_columns("quant_recon_test"),
    "quant_recon_accuracy",
    "conditional_accuracy",
    "n_samples",
)
FLOOR = ("n_fd", *_fd_columns("floor_test_halves"))  # the same for every row of a dataset


def _mean(a):
    a = np.asarray(a, dtype=np.float64)
    return None if not np.isfinite(a).any() else float(np.nanmean(a))


def evaluate(inp, out, params, log):
    """Paired test-set metrics of one quantizer under one test assignment: per image (per_image.npz)
    and their means (metrics.json), the same real test images for every quantizer and seed.

    A column that does not apply to a row is empty (NaN per image, null in the JSON), never taken
    from another model: on ``vqvae`` rows the VAE's continuous columns are empty and the VQ-VAE's
    own decoder applied to its unquantized encoder output z_e gives ``*_ze_real`` / ``*_quant_ze``.
    The prior's and the samples' figures belong to the quantizer's own assignment only.
    """
    from geovq.codebook import quantize
    from geovq.data import load_prepared
    from geovq.io import load_json
    from geovq.metrics import active_units, codebook_stats, per_image_metrics
    from geovq.quantizers import get
    from geovq.train import decode
    from geovq.vqvae import load_decoder

    q = get(params.quantizer)
    if params.assign not in q.assigns:
        raise GeovqError(f"quantizer {q.name!r} has no {params.assign!r} assignment (only {', '.join(q.assigns)})")
    device = device_of(params)
    images, _ = load_prepared(inp.test)
    codes = load_codes(inp.codes_test)
    idx = codes["image_index"]
    real = images[idx]
    model = load_decoder(inp.model, device, dataset=params.dataset)  # the VAE, or the VQ-VAE for vqvae
    mu, _ = load_latents(inp.latents_test)  # the VAE's mu, or the VQ-VAE's z_e
    if len(mu) != len(images):
        raise GeovqError(f"{inp.latents_test}: {len(mu)} latents but {inp.test} has {len(images)} images")
    codebook = load_npz(inp.codebook, ("codebook",))["codebook"]
    K = int(codes["K"])
    z_q = quantize(codebook, codes["codes"])
    cont = decode(model, mu[idx], device)
    quant = decode(model, z_q, device)
    arrays = per_image_metrics(
        real, cont, quant, win_size=params.evaluate["ssim_window"], batch=params.evaluate["batch_size"]
    )
    arrays["latent_sq_error"] = ((z_q - mu[idx]) ** 2).sum(1).reshape(len(idx), -1).mean(1).astype(np.float64)
    if not q.posthoc:  # not the VAE's continuous model: its own reference under its own names
        nan = np.full(len(idx), np.nan)
        for name in ("cont_real", "quant_cont"):
            own = name.replace("cont", "ze")
            for m in ("mse", "psnr", "ssim"):
                arrays[f"{m}_{own}"] = arrays[f"{m}_{name}"]
                arrays[f"{m}_{name}"] = nan
        arrays["ze_sq_error"], arrays["latent_sq_error"] = arrays["latent_sq_error"], nan
    meta = {
        "dataset": params.dataset,
        "variant": params.variant,
        "quantizer": q.name,
        "assign": params.assign,
        "seed": int(params.seed),
    }
    save_npz(out.per_image, image_index=idx.astype(np.int64), **arrays, **{k: np.array(v) for k, v in meta.items()})

    result = {**meta, "K": K, "n_test_images": int(len(idx))}
    result.update({k: _mean(v) for k, v in arrays.items()})
    if q.posthoc:
        result["quant_cont_over_cont_real"] = result["mse_quant_cont"] / result["mse_cont_real"]
        result["active_units"] = active_units(mu)
        result["latent_units"] = int(np.prod(mu.shape[1:]))
    result.update({f"test_{k}": v for k, v in codebook_stats(codes["codes"], K).items()})
    # every train code the quantizer wrote (codebook.train_images images; the prior's data)
    train_codes = load_codes(inp.codes_train, K)["codes"]
    result.update({f"train_{k}": v for k, v in codebook_stats(train_codes, K).items()})
    own = params.assign == q.native_assign
    nll, quality = load_json(inp.nll), load_json(inp.sample_quality)
    for key in GENERATIVE:
        value = quality.get(key, nll.get(key))
        result[key] = value if own else None  # the prior models its own codes, not these
    reference = load_json(inp.recon_quality)  # the continuous VAE's reconstructions; real half A vs half B
    for key in _fd_columns("cont_recon_test"):
        result[key] = reference[key] if q.posthoc else None
    result.update({key: reference[key] for key in FLOOR})
    classifier = load_json(inp.classifier_metrics)
    result["classifier_test_accuracy"] = classifier["test_accuracy"]
    result["classifier_task"] = classifier.get("task", "classes")  # rotation: a dataset without labels
    log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    save_json(out.metrics, result)


TABLE_COLUMNS = [
    "dataset",
    "variant",
    "quantizer",
    "assign",
    "seed",
    "K",
    "n_test_images",
    "mse_cont_real",
    "psnr_cont_real",
    "ssim_cont_real",
    "mse_quant_real",
    "psnr_quant_real",
    "ssim_quant_real",
    "mse_quant_cont",
    "psnr_quant_cont",
    "ssim_quant_cont",
    "latent_sq_error",
    "quant_cont_over_cont_real",
    "active_units",
    "latent_units",
    "mse_ze_real",
    "psnr_ze_real",
    "ssim_ze_real",
    "mse_quant_ze",
    "psnr_quant_ze",
    "ssim_quant_ze",
    "ze_sq_error",
    "test_perplexity",
    "test_perplexity_miller_madow",
    "test_codes_used",
    "test_dead_codes",
    "test_tokens",
    "train_perplexity",
    "train_perplexity_miller_madow",
    "train_codes_used",
    "train_dead_codes",
    "train_tokens",
    "test_bits_per_token",
    "test_bits_per_image",
    "test_unigram_bits_per_token",
    "context_gain_bits_per_token",
    "test_class_unigram_bits_per_token",
    "n_fd",
    *_fd_columns("samples_test"),
    *_fd_columns("quant_recon_test"),
    *_fd_columns("cont_recon_test"),
    *_fd_columns("floor_test_halves"),
    "conditional_accuracy",
    "quant_recon_accuracy",
    "classifier_test_accuracy",
    "classifier_task",
]


def metrics_table(inp, out, params, log):
    import pandas as pd

    from geovq.io import load_json

    rows = [load_json(p) for p in inp.metrics]
    df = pd.DataFrame(rows)
    cols = [c for c in TABLE_COLUMNS if c in df] + [c for c in df.columns if c not in TABLE_COLUMNS]
    df = df[cols].sort_values(["dataset", "variant", "quantizer", "assign", "seed"]).reset_index(drop=True)
    with atomic_path(out.csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out.md) as tmp:
        Path(tmp).write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
    with atomic_path(out.html) as tmp:
        Path(tmp).write_text(df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    log(f"{len(df)} rows -> {out.csv}, {out.md}")
