"""Stage of rules/vae.smk: one VAE trained, its latent means of both splits written."""

from __future__ import annotations

from geovq.artifacts import write_csv
from geovq.io import save_npz
from geovq.stages.runner import device_of


def train_vae(inp, out, params, log):
    from geovq.data import load_prepared
    from geovq.device import seed_everything
    from geovq.train import encode_mu, save_vae, train_vae as fit

    seed_everything(params.seed)
    device = device_of(params)
    train_x, train_y = load_prepared(inp.train)
    test_x, test_y = load_prepared(inp.test)
    log(f"training {params.variant} VAE on {len(train_x)} images {tuple(train_x.shape[1:])}, device {device}")
    model, rows = fit(params.variant, train_x, dict(params.vae), seed=params.seed, device=device, log=log)
    save_vae(out.model, model, params.variant, dict(params.vae), dataset=params.dataset, image_shape=train_x.shape[1:])
    write_csv(out.losses, rows)
    for x, y, path in ((train_x, train_y, out.latents_train), (test_x, test_y, out.latents_test)):
        mu = encode_mu(model, x, device)
        save_npz(path, mu=mu, labels=y.numpy())
        log(f"latents {mu.shape} -> {path}")
