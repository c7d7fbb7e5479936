"""Stages of rules/classifier.smk: the feature classifier, the real test halves every Fréchet distance is
taken against, and the continuous VAE's reference row."""

from __future__ import annotations

import numpy as np

from geovq.artifacts import as_uint8, code_subset, load_latents, read_classifier, write_csv
from geovq.io import GeovqError, save_json, save_npz
from geovq.stages.runner import device_of, log_result


def train_classifier(inp, out, params, log):
    """The feature classifier: it learns the classes, or, for a dataset without labels (of 2 or more
    classes), which of 4 rotations was applied (geovq.classifier); metrics.json names the task."""
    from geovq.classifier import accuracy, save_classifier, train_classifier as fit
    from geovq.data import has_labels, load_prepared
    from geovq.device import seed_everything

    cfg = dict(params.classifier)
    seed_everything(cfg["seed"])
    device = device_of(params)
    train_x, train_y = load_prepared(inp.train)
    test_x, test_y = load_prepared(inp.test)
    model, rows = fit(train_x, train_y if has_labels(train_y) else None, cfg, seed=cfg["seed"], device=device, log=log)
    acc = accuracy(model, test_x, test_y.numpy(), device)
    log(f"test accuracy ({model.task}) {acc:.4f} on {len(test_x)} images")
    save_classifier(out.model, model, cfg, dataset=params.dataset)
    write_csv(out.losses, rows)
    save_json(
        out.metrics,
        {
            "dataset": params.dataset,
            "task": model.task,  # classes, or rotation (no labels): what the accuracies are of
            "test_accuracy": acc,
            "n_test_images": len(test_x),
            "val_accuracy": rows[-1]["val_acc"],
            "train_accuracy": rows[-1]["train_acc"],  # over the last epoch, while it trained
            "epochs": len(rows),
            "seconds": sum(r["seconds"] for r in rows),
        },
    )


def fd_reference(inp, out, params, log):
    """Two disjoint sets A and B of real test images (n_fd each), their classifier features and the
    floor of every Fréchet distance and KID against B: A against B at the same n."""
    from geovq.artifacts import fd_halves
    from geovq.classifier import features
    from geovq.data import load_prepared
    from geovq.frechet import fd_kid, named

    device = device_of(params)
    clf = read_classifier(inp, params, device)
    test_x, _ = load_prepared(inp.test)
    # as many images as the prior draws samples, at most half the coded test images each
    a, b = fd_halves(len(test_x), params.codebook["test_images"], params.sample_n)
    n_fd = len(a)
    feats_a, feats_b = features(clf, test_x[a], device), features(clf, test_x[b], device)
    floor = named(fd_kid(feats_a, feats_b), "floor_test_halves")
    log_result(log, {"dataset": params.dataset, "n_test_images": len(test_x), "n_fd": n_fd, **floor})
    floor = {k: np.float64(v) for k, v in floor.items()}
    save_npz(out.reference, a=a, b=b, features_a=feats_a, features_b=feats_b, n_fd=np.int64(n_fd), **floor)


def recon_quality(inp, out, params, log):
    """The reference row: the continuous VAE's reconstructions of test half A against real half B
    (Fréchet distance with its interval, KID) and their class accuracy over every coded test image
    (None where the classifier learnt rotations: the dataset has no labels)."""
    from geovq.artifacts import load_fd_reference, positions
    from geovq.classifier import class_accuracy, features_and_predictions
    from geovq.data import load_prepared
    from geovq.frechet import fd_kid, named
    from geovq.train import decode, load_vae

    device = device_of(params)
    clf = read_classifier(inp, params, device)
    vae = load_vae(inp.model, device, dataset=params.dataset)
    test_x, test_y = load_prepared(inp.test)
    ref = load_fd_reference(inp.fd_reference)
    mu, _ = load_latents(inp.latents_test)
    if len(mu) != len(test_x):
        raise GeovqError(f"{inp.latents_test}: {len(mu)} latents but {inp.test} has {len(test_x)} images")
    idx = code_subset(len(test_x), params.codebook["test_images"], params.seed, "test")
    recon = as_uint8(decode(vae, mu[idx], device))
    recon_feats, recon_pred = features_and_predictions(clf, recon, device)
    in_a = positions(idx, ref["a"], f"{inp.fd_reference}: test half A holds images that are not coded")
    cont = fd_kid(recon_feats[in_a], ref["features_b"])
    result = {
        "dataset": params.dataset,
        "variant": params.variant,
        "seed": params.seed,
        "n_cont_recon_images": int(len(idx)),
        "n_fd": int(ref["n_fd"]),
        **named(cont, "cont_recon_test"),
        **{k: float(v) for k, v in ref.items() if "_floor_test_halves" in k},
        "cont_recon_accuracy": class_accuracy(clf, recon_pred, test_y.numpy()[idx]),
    }
    log_result(log, result)
    save_json(out.quality, result)
