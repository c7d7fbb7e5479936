"""Stages of rules/classifier.smk: the feature classifier and the continuous VAE's reference row."""

from __future__ import annotations

from geovq.artifacts import as_uint8, code_subset, load_latents, read_classifier, write_csv
from geovq.io import GeovqError, save_json
from geovq.stages.runner import device_of, log_result


def train_classifier(inp, out, params, log):
    from geovq.classifier import predict, save_classifier, train_classifier as fit
    from geovq.data import load_prepared
    from geovq.device import seed_everything

    cfg = dict(params.classifier)
    seed_everything(cfg["seed"])
    device = device_of(params)
    train_x, train_y = load_prepared(inp.train)
    test_x, test_y = load_prepared(inp.test)
    model, rows = fit(train_x, train_y, cfg, seed=cfg["seed"], device=device, log=log)
    acc = float((predict(model, test_x, device) == test_y.numpy()).mean())
    log(f"test accuracy {acc:.4f} on {len(test_x)} images")
    save_classifier(out.model, model, cfg, dataset=params.dataset)
    write_csv(out.losses, rows)
    save_json(
        out.metrics,
        {
            "dataset": params.dataset,
            "test_accuracy": acc,
            "n_test_images": len(test_x),
            "val_accuracy": rows[-1]["val_acc"],
            "epochs": len(rows),
        },
    )


def recon_quality(inp, out, params, log):
    """The reference row: the continuous VAE's test reconstructions (same images as the codes) and real train images."""
    from geovq.classifier import features_and_predictions
    from geovq.data import load_prepared, subset_indices
    from geovq.frechet import frechet_distance
    from geovq.train import decode, load_vae

    device = device_of(params)
    clf = read_classifier(inp, params, device)
    vae = load_vae(inp.model, device, dataset=params.dataset)
    test_x, test_y = load_prepared(inp.test)
    train_x, _ = load_prepared(inp.train)
    mu, _ = load_latents(inp.latents_test)
    if len(mu) != len(test_x):
        raise GeovqError(f"{inp.latents_test}: {len(mu)} latents but {inp.test} has {len(test_x)} images")
    idx = code_subset(len(test_x), params.codebook["test_images"], params.seed, "test")
    recon = as_uint8(decode(vae, mu[idx], device))
    real_feats, real_pred = features_and_predictions(clf, test_x, device)
    recon_feats, recon_pred = features_and_predictions(clf, recon, device)
    # Two real sets of the same size: the floor any generated set is measured against.
    train_idx = subset_indices(len(train_x), len(test_x), params.seed)
    train_feats, _ = features_and_predictions(clf, train_x[train_idx], device)
    result = {
        "dataset": params.dataset,
        "variant": params.variant,
        "seed": params.seed,
        "n_real_test_images": int(len(test_x)),
        "n_cont_recon_images": int(len(idx)),
        "fd_cont_recon_real": frechet_distance(recon_feats, real_feats),
        "fd_real_train_real": frechet_distance(train_feats, real_feats),
        "cont_recon_accuracy": float((recon_pred == test_y.numpy()[idx]).mean()),
        "real_test_accuracy": float((real_pred == test_y.numpy()).mean()),
    }
    log_result(log, result)
    save_json(out.quality, result)
