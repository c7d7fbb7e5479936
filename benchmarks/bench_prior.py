"""Code prior throughput on this machine: training tokens/s and sampling images/s per model size (no asserts).

    .venv/bin/python benchmarks/bench_prior.py [--threads N] [--steps S] [--device auto]

Codes are random (the cost does not depend on their values); each row times ``--steps``
optimizer steps after one warm-up step, then the test-NLL pass and ancestral sampling.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from geovq.device import resolve_device
from geovq.prior import CodePrior, PriorConfig, _optimizer, nll_bits, sample

# (label, grid, K, n_layer, n_head, n_embd, batch_size): the default spatial and vanilla priors, and larger ones
CASES = [
    ("spatial default", (4, 4), 512, 2, 4, 128, 128),
    ("spatial 4 layers", (4, 4), 512, 4, 4, 128, 128),
    ("spatial 256-d", (4, 4), 512, 2, 4, 256, 128),
    ("spatial 7x7 grid", (7, 7), 512, 2, 4, 128, 128),
    ("vanilla default", (1, 1), 512, 2, 4, 128, 128),
]


def bench(label, grid, K, n_layer, n_head, n_embd, batch_size, *, steps, device, n_sample, n_classes=10):
    torch.manual_seed(0)
    cfg = PriorConfig(K=K, grid=grid, n_classes=n_classes, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0)
    model = CodePrior(cfg).to(device)
    opt = _optimizer(model, 1e-3, 0.1)
    L = cfg.block_size
    codes = torch.randint(0, K, ((steps + 1) * batch_size, L))
    labels = torch.randint(0, n_classes, (len(codes),))

    def step(i):
        x = codes[i * batch_size : (i + 1) * batch_size].to(device)
        logits = model(x, labels[i * batch_size : (i + 1) * batch_size].to(device))
        loss = F.cross_entropy(logits.reshape(-1, K), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step(0)  # warm-up: allocations, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    grids = codes[: 10 * batch_size].view(-1, *grid).numpy()
    t0 = time.perf_counter()
    nll_bits(model, grids, labels[: len(grids)].numpy(), device=device)
    nll_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample(model, n_sample, labels=np.arange(n_sample) % n_classes, generator=torch.Generator().manual_seed(0))
    sample_s = time.perf_counter() - t0
    return {
        "case": label,
        "tokens/img": L,
        "params": sum(p.numel() for p in model.parameters()),
        "train tokens/s": steps * batch_size * L / train_s,
        "train imgs/s": steps * batch_size / train_s,
        "nll tokens/s": len(grids) * L / nll_s,
        "sample imgs/s": n_sample / sample_s,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, {args.threads} threads, {args.steps} steps per case, torch {torch.__version__}")
    rows = [bench(*case, steps=args.steps, device=device, n_sample=args.samples) for case in CASES]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(f"{v:,.0f}" if isinstance(v, (int, float)) else str(v) for v in r.values()) + " |")
    r = rows[0]
    print(
        f"\nspatial default: one epoch over 20k grids ~ {20000 / r['train imgs/s']:.0f} s, "
        f"over 60k ~ {60000 / r['train imgs/s']:.0f} s; 10k samples ~ {10000 / r['sample imgs/s']:.0f} s"
    )


if __name__ == "__main__":
    main()
