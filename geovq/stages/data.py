"""Stage of rules/data.smk: a dataset read (or drawn) into one file per split."""

from __future__ import annotations

import numpy as np

from geovq.io import load_npz


def prepare_data(inp, out, params, log):
    from geovq.data import has_labels, prepare

    opts = dict(params.options)
    classes = prepare(
        params.dataset,
        out.train,
        out.test,
        data_dir=params.data_dir,
        download=params.download,
        options=opts,
        expected_channels=opts.get("channels"),
        image_dataset=params.image_dataset,
    )
    if classes is not None:
        log(f"classes (labels 0..{len(classes) - 1}, sorted folder names): {classes}")
    for split in ("train", "test"):
        d = load_npz(getattr(out, split), ("images", "labels"))
        labels = np.bincount(d["labels"]).tolist() if has_labels(d["labels"]) else "none (unlabeled dataset)"
        log(f"{split}: images {d['images'].shape} labels {labels}")
