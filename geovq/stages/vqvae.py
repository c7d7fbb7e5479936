"""Stage of rules/vqvae.smk: the end-to-end VQ-VAE, its codebook and codes."""

from __future__ import annotations

import numpy as np

from geovq.artifacts import code_subset, write_csv
from geovq.io import save_npz
from geovq.stages.runner import device_of


def train_vqvae(inp, out, params, log):
    from geovq.data import load_prepared
    from geovq.device import seed_everything
    from geovq.vqvae import encode_codes, save_vqvae, train_vqvae as fit

    seed_everything(params.seed)
    device = device_of(params)
    K = params.codebook["K"]
    train_x, train_y = load_prepared(inp.train)
    test_x, test_y = load_prepared(inp.test)
    model, rows = fit(
        params.variant, train_x, dict(params.vae), dict(params.vqvae), K, seed=params.seed, device=device, log=log
    )
    save_vqvae(out.model, model, dict(params.vae), dataset=params.dataset, training=dict(params.vqvae))
    write_csv(out.losses, rows)
    save_npz(out.codebook, codebook=model.vq.embedding.cpu().numpy().astype(np.float32), K=np.int64(K))
    for x, y, split, path in ((train_x, train_y, "train", out.codes_train), (test_x, test_y, "test", out.codes_test)):
        z_e, codes = encode_codes(model, x, device)
        idx = code_subset(len(x), params.codebook[f"{split}_images"], params.seed, split)
        save_npz(path, codes=codes[idx], image_index=idx, labels=y.numpy()[idx], K=np.int64(K))
        log(f"{split} codes {codes[idx].shape} for {len(idx)} images")
        if split == "test":  # every test image, like the VAE's latents_test: z_e before quantization
            save_npz(out.latents_test, mu=z_e, labels=y.numpy())
