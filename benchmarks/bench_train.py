"""Training step time of the default config's VAEs and VQ-VAEs, by layout and decoder path (no asserts).

    .venv/bin/python benchmarks/bench_train.py [--threads 1] [--steps 30] [--rounds 5] [--device auto]

Each case times ``--steps`` optimizer steps (batch 128, random images: the cost does not depend on
their values) after three warm-up steps; the cases alternate for ``--rounds`` rounds on the same
models and the medians are printed, with each case's ratio to the plain path of its model. Paths:

* ``plain``: the modules as they are, default (NCHW) layout;
* ``channels_last``: conv weights and images in channels-last layout (geovq.train.channels_last);
* ``fused``: channels-last, and each nearest-2x upsample + 3x3 conv of the decoder computed as one
  conv on the small map (geovq.models.upsample2x_conv3x3), as training runs now.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import geovq.models
from geovq.device import resolve_device
from geovq.models import build_vae, elbo_terms
from geovq.vqvae import VQVAE

ARCH = {
    "vanilla": {"latent_dim": 16, "hidden": 512},
    "spatial": {"latent_channels": 8, "grid": 4, "channels": [16, 32, 32]},
}
VQ = {"beta": 0.25, "decay": 0.99, "eps": 1e-5, "dead_fraction": 0.03}  # config/schema.yaml defaults
FUSES = geovq.models.upsample_conv_fuses


def _model(kind, variant, layout, device):
    torch.manual_seed(0)
    if kind == "VAE":
        model = build_vae(variant, (1, 28, 28), ARCH[variant])
    else:
        model = VQVAE(variant, (1, 28, 28), ARCH[variant], 512, VQ)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if layout != "plain" else model


def _step_fn(kind, model, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        if kind == "VAE":
            logits, mu, logvar = model(x)
            recon, kl = elbo_terms(logits, x, mu, logvar)
            loss = (recon + 0.1 * kl).mean()
        else:
            logits, _, _, commitment = model(x)
            recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
            loss = (recon.flatten(1).sum(1) + commitment).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, device {device}, {args.threads} thread(s), batch 128, {args.steps} steps")
    cases = []
    for kind in ("VAE", "VQ-VAE"):
        for variant in ("vanilla", "spatial"):
            layouts = ("plain", "channels_last", "fused") if variant == "spatial" else ("plain",)
            for layout in layouts:
                x = torch.rand(128, 1, 28, 28, device=device)
                if layout != "plain":
                    x = x.contiguous(memory_format=torch.channels_last)
                model = _model(kind, variant, layout, device).train()
                cases.append(((kind, variant, layout), _step_fn(kind, model, x)))
    times = {key: [] for key, _ in cases}
    for _ in range(args.rounds):
        for key, step in cases:
            geovq.models.upsample_conv_fuses = FUSES if key[2] == "fused" else (lambda *a: False)
            for _ in range(3):
                step()
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            times[key].append((time.perf_counter() - t0) / args.steps * 1e3)
    geovq.models.upsample_conv_fuses = FUSES
    print("| model | variant | path | ms/step (median) | min–max | vs plain |")
    print("|---|---|---|---:|---:|---:|")
    for key, ts in times.items():
        plain = statistics.median(times[(key[0], key[1], "plain")])
        med = statistics.median(ts)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {med:.1f} | {min(ts):.1f}–{max(ts):.1f} | {med / plain:.2f} |")


if __name__ == "__main__":
    main()
