"""Stages of rules/assign.smk: the decoder's pull-back metric at the test cells, and one quantizer's
test codes under an assignment rule other than its own (nearest code, metric, decode; geovq.assign)."""

from __future__ import annotations

import numpy as np

from geovq.artifacts import code_subset, grid_cell_ids, load_codes, load_latents
from geovq.io import GeovqError, load_npz, save_npz
from geovq.stages.runner import device_of


def test_metrics(inp, out, params, log):
    """The pull-back metric ``params.metric`` of decoder ``params.model`` (the VAE's, or the VQ-VAE's
    at its encoder output) at every cell of the coded test images: computed once per run, decoder
    and metric kind, read by every rule that needs it (geodesic codes, metric and decode codes)."""
    from geovq.device import keep_freed_memory
    from geovq.riemann import cell_metrics, pullback
    from geovq.vqvae import load_decoder

    keep_freed_memory()
    device = device_of(params)
    mu, _ = load_latents(inp.latents_test)
    idx = code_subset(len(mu), params.codebook["test_images"], params.seed, "test")
    cells = grid_cell_ids(idx, mu.shape[2:])
    decode, weight = pullback(load_decoder(inp.model, device, dataset=params.dataset), params.metric)
    log(
        f"{params.metric} pull-back metrics of the {params.model} decoder at {len(cells)} cells of {len(idx)} test images"
    )
    metrics = cell_metrics(decode, mu, cells, weight=weight, device=device, precision=params.precision)
    save_npz(out.metrics, metrics=metrics, cell_ids=cells, image_index=idx)


def assign_codes(inp, out, params, log):
    """Test codes of quantizer ``params.quantizer`` under rule ``params.assign`` (nearest, metric or
    decode), on exactly the test images of its own codes."""
    from geovq.assign import decode_codes, metric_codes
    from geovq.codebook import nearest_centroid, to_cells

    cb = load_npz(inp.codebook, ("codebook", "K"))
    codebook, K = cb["codebook"], int(cb["K"])
    own = load_codes(inp.codes_test, K)
    idx = own["image_index"]
    mu, y = load_latents(inp.latents_test)  # the VAE's mu, or the VQ-VAE's z_e
    n, _, h, w = mu[idx].shape
    cells = grid_cell_ids(idx, (h, w))
    x = to_cells(mu)[cells]
    if params.assign == "nearest":
        codes = nearest_centroid(x, codebook)[0]
    else:
        metrics = load_npz(inp.metrics, ("metrics", "cell_ids"))
        if not np.array_equal(metrics["cell_ids"], cells):
            raise GeovqError(f"{inp.metrics}: metrics of other test cells than the images of {inp.codes_test}")
        m = 1 if params.assign == "metric" else min(params.assignment["top_m"], K)
        top, _ = metric_codes(x, metrics["metrics"], codebook, m)
        codes = top[:, 0]
        if params.assign == "decode":
            from geovq.device import batch_for
            from geovq.vqvae import load_decoder

            device = device_of(params)
            model = load_decoder(inp.model, device, dataset=params.dataset)
            log(f"decoding the {m} best codes under the {params.metric} metric of {len(cells)} cells")
            codes, _ = decode_codes(
                model.decode,
                mu,
                cells,
                codebook,
                top,
                kind=params.metric,
                device=device,
                batch_size=batch_for(device, 1024),
            )
    same = float((codes == own["codes"].reshape(-1)).mean())
    log(
        f"{params.assign}: {len(cells)} cells of {n} test images; {100 * same:.1f} % keep the {params.quantizer} own code"
    )
    save_npz(out.codes_test, codes=codes.reshape(n, h, w), image_index=idx, labels=y[idx], K=np.int64(K))
