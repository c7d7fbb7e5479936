"""Pipeline stages: one function per Snakemake rule, called by the thin scripts in workflow_scripts/.

Each stage reads its inputs, calls the library and writes its outputs atomically. Stages take
``inp``/``out``/``params`` objects with attribute access (Snakemake's, or SimpleNamespace in tests).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from geovq.io import GeovqError, atomic_path, load_npz, save_json, save_npz


# ---------------------------------------------------------------- running a stage
class Log:
    """Timestamped lines to the rule's log file (flushed, so `tail -f` shows progress)."""

    def __init__(self, path=None):
        self.f = open(path, "w") if path else None
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        line = f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - self.t0:7.1f}s] {msg}"
        print(line, file=self.f or sys.stderr, flush=True)


def entry(smk, stage):
    """Run ``stage`` for a Snakemake ``script:`` job: log to the rule's log, one-line errors."""
    log_path = smk.log[0] if len(smk.log) else None
    log = Log(log_path)
    # the config's thread count, not the cores Snakemake granted: results must not depend on --cores
    _set_threads(smk.config["threads"])
    stderr = sys.stderr
    try:
        redirect = open(log_path, "a") if log_path else contextlib.nullcontext(sys.stderr)
        with redirect as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            stage(smk.input, smk.output, smk.params, log)
        log(f"done in {time.perf_counter() - log.t0:.1f}s")
    except (GeovqError, ValueError) as e:
        msg = f"geovq error in rule {smk.rule}: {e}".splitlines()[0]
        log(msg)
        if log.f:
            traceback.print_exc(file=log.f)
        print(msg, file=stderr, flush=True)
        sys.exit(1)


def _set_threads(n):
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def _device(params):
    from geovq.device import resolve_device

    return resolve_device(params.device)


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


# ---------------------------------------------------------------- stages
def prepare_data(inp, out, params, log):
    from geovq.data import prepare

    opts = dict(params.options)
    prepare(params.dataset, out.train, out.test, data_dir=params.data_dir, download=params.download,
            options=opts, expected_channels=opts.get("channels"))
    for split in ("train", "test"):
        d = load_npz(getattr(out, split), ("images", "labels"))
        log(f"{split}: images {d['images'].shape} labels {np.bincount(d['labels']).tolist()}")


def train_vae(inp, out, params, log):
    from geovq.data import load_prepared
    from geovq.device import seed_everything
    from geovq.train import encode_mu, save_vae, train_vae as fit

    seed_everything(params.seed)
    device = _device(params)
    train_x, train_y = load_prepared(inp.train)
    test_x, test_y = load_prepared(inp.test)
    log(f"training {params.variant} VAE on {len(train_x)} images {tuple(train_x.shape[1:])}, device {device}")
    model, rows = fit(params.variant, train_x, dict(params.vae), seed=params.seed, device=device, log=log)
    save_vae(out.model, model, params.variant, dict(params.vae), dataset=params.dataset,
             image_shape=train_x.shape[1:])
    write_csv(out.losses, rows)
    for x, y, path in ((train_x, train_y, out.latents_train), (test_x, test_y, out.latents_test)):
        mu = encode_mu(model, x, device)
        save_npz(path, mu=mu, labels=y.numpy())
        log(f"latents {mu.shape} -> {path}")


def code_subset(n, size, seed, split):
    """The images of a split that get codes: the same seeded subset for every quantizer (paired)."""
    from geovq.data import subset_indices

    return subset_indices(n, size, seed * 1000 + {"train": 1, "test": 2}[split])


def _latents(path):
    d = load_npz(path, ("mu", "labels"))
    mu = d["mu"]
    if mu.ndim != 4 or not np.isfinite(mu).all():
        raise GeovqError(f"{path}: expected finite latents mu (N, C, H, W), got {mu.shape}"
                         + ("" if np.isfinite(mu).all() else " with NaN/inf"))
    return mu, d["labels"]


def kmeans_codebook(inp, out, params, log):
    from geovq.codebook import EuclideanKMeans, to_cells

    mu_train, y_train = _latents(inp.latents_train)
    mu_test, y_test = _latents(inp.latents_test)
    cells = to_cells(mu_train)
    K = params.codebook["K"]
    log(f"k-means K={K} on {len(cells)} cells of dim {cells.shape[1]}")
    km = EuclideanKMeans(K, n_iter=params.codebook["kmeans_iters"], seed=params.seed).fit(cells)
    log(f"inertia {km.inertia_:.4g}")
    save_npz(out.codebook, codebook=km.cluster_centers_.astype(np.float32), K=np.int64(K))
    for mu, y, split, path in ((mu_train, y_train, "train", out.codes_train), (mu_test, y_test, "test", out.codes_test)):
        idx = code_subset(len(mu), params.codebook[f"{split}_images"], params.seed, split)
        n, c, h, w = mu[idx].shape
        codes = km.predict(to_cells(mu[idx])).reshape(n, h, w)
        save_npz(path, codes=codes, image_index=idx, labels=y[idx], K=np.int64(K))
        log(f"{split} codes {codes.shape} for {len(idx)} images")


def load_codes(path, K=None):
    d = load_npz(path, ("codes", "image_index", "labels", "K"))
    K = int(d["K"]) if K is None else K
    if d["codes"].ndim != 3:
        raise GeovqError(f"{path}: expected codes (N, H, W), got {d['codes'].shape}")
    if d["codes"].min() < 0 or d["codes"].max() >= K:
        raise GeovqError(f"{path}: codes must lie in [0, {K}), found [{d['codes'].min()}, {d['codes'].max()}]")
    return d


def evaluate(inp, out, params, log):
    """Paired test-set metrics: the same real test images against continuous and quantized decodes."""
    from geovq.codebook import quantize
    from geovq.data import load_prepared
    from geovq.metrics import codebook_stats, mse, psnr, ssim
    from geovq.io import load_json
    from geovq.train import decode
    from geovq.vqvae import load_decoder

    device = _device(params)
    images, _ = load_prepared(inp.test)
    codes = load_codes(inp.codes_test)
    idx = codes["image_index"]
    real = images[idx]
    model = load_decoder(inp.model, device, dataset=params.dataset)  # the VAE, or the VQ-VAE for vqvae
    mu, _ = _latents(inp.latents_test)
    codebook = load_npz(inp.codebook, ("codebook",))["codebook"]
    K = int(codes["K"])
    cont = decode(model, mu[idx], device)
    quant = decode(model, quantize(codebook, codes["codes"]), device)
    win = params.evaluate["ssim_window"]
    result = {
        "dataset": params.dataset, "variant": params.variant, "quantizer": params.quantizer,
        "seed": params.seed, "K": K, "n_test_images": int(len(idx)),
    }
    for name, a, b in (("cont_real", cont, real), ("quant_real", quant, real), ("quant_cont", quant, cont)):
        result[f"mse_{name}"] = float(mse(a, b).mean())
        result[f"psnr_{name}"] = float(psnr(a, b).clamp(max=100).mean())
        result[f"ssim_{name}"] = float(ssim(a, b, win_size=win).mean())
    latent_err = (quantize(codebook, codes["codes"]) - mu[idx]) ** 2
    result["latent_sq_error"] = float(latent_err.sum(1).mean())
    result.update({f"test_{k}": v for k, v in codebook_stats(codes["codes"], K).items()})
    train_codes = load_codes(inp.codes_train, K)["codes"]
    result.update({f"train_{k}": v for k, v in codebook_stats(train_codes, K).items()})
    # the generative side: prior NLL on the test codes, Frechet distances, conditional accuracy
    nll = load_json(inp.nll)
    result.update({k: nll[k] for k in ("test_bits_per_token", "test_bits_per_image")})
    quality = load_json(inp.sample_quality)
    result.update({k: v for k, v in quality.items() if k not in result and not isinstance(v, (dict, list, str))})
    reference = load_json(inp.recon_quality)  # the continuous VAE's reconstructions, and real vs real
    result.update({k: reference[k] for k in ("fd_cont_recon_real", "fd_real_train_real")})
    log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    save_json(out.metrics, result)


TABLE_COLUMNS = [
    "dataset", "variant", "quantizer", "seed", "K", "n_test_images",
    "mse_cont_real", "psnr_cont_real", "ssim_cont_real",
    "mse_quant_real", "psnr_quant_real", "ssim_quant_real",
    "mse_quant_cont", "psnr_quant_cont", "ssim_quant_cont",
    "latent_sq_error", "test_perplexity", "test_codes_used", "test_dead_codes", "train_perplexity",
    "test_bits_per_token", "test_bits_per_image", "fd_samples_real", "fd_quant_recon_real",
    "fd_cont_recon_real", "fd_real_train_real", "conditional_accuracy", "quant_recon_accuracy",
]


def metrics_table(inp, out, params, log):
    import pandas as pd

    from geovq.io import load_json

    rows = [load_json(p) for p in inp.metrics]
    df = pd.DataFrame(rows)
    cols = [c for c in TABLE_COLUMNS if c in df] + [c for c in df.columns if c not in TABLE_COLUMNS]
    df = df[cols].sort_values(["dataset", "variant", "quantizer", "seed"]).reset_index(drop=True)
    with atomic_path(out.csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out.md) as tmp:
        Path(tmp).write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
    with atomic_path(out.html) as tmp:
        Path(tmp).write_text(df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    log(f"{len(df)} rows -> {out.csv}, {out.md}")
