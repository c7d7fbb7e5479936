"""The study's tables: per-seed summary, paired contrasts with intervals, and the written answer.

Reads every evaluation of a run (metrics.json for the summary, per_image.npz for the contrasts);
each per-image file names its own dataset, variant, quantizer, assign and seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geovq.io import GeovqError, atomic_path, load_json, load_npz, save_text

META = ("dataset", "variant", "quantizer", "assign", "seed")


def load_per_image(path):
    """((dataset, variant, quantizer, assign, seed), {array name: (N,) array}) of one evaluation."""
    d = load_npz(path, ("image_index", *META))
    key = tuple(str(d[k]) for k in META[:4]) + (int(d["seed"]),)
    arrays = {k: np.asarray(v) for k, v in d.items() if k not in META}
    return key, arrays


def study_tables(inp, out, params, log):
    import pandas as pd

    from geovq import study

    df = pd.DataFrame([load_json(p) for p in inp.metrics])
    summary = study.summary(df)
    with atomic_path(out.summary_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    save_text(out.summary_md, study.summary_markdown(summary) + "\n")
    log(f"summary: {len(summary)} rows over {df['seed'].nunique()} seed(s)")

    per_image = {}
    for path in inp.per_image:
        key, arrays = load_per_image(path)
        if key in per_image:
            raise GeovqError(f"{path}: a second evaluation of {key}")
        per_image[key] = arrays
    specs = [dict(s) for s in params.contrasts]
    contrasts = study.contrasts(per_image, specs, alpha=params.alpha)
    for skipped in contrasts.attrs.get("skipped", []):
        log(f"contrast skipped: {skipped}")
    with atomic_path(out.contrasts_csv) as tmp:
        contrasts.to_csv(tmp, index=False, float_format="%.6g")
    save_text(out.contrasts_md, study.contrasts_markdown(contrasts) + "\n")
    save_text(out.answer_md, study.answer_markdown(contrasts, alpha=params.alpha) + "\n")
    save_text(out.answer_html, study.answer_html(contrasts, alpha=params.alpha))
    from geovq import plots

    r = params.report
    plots.contrast_forest(out.forest, contrasts, (r["fig_width"], r["fig_width"] * 0.6, r["dpi"]))
    log(f"{len(contrasts)} contrast rows -> {Path(out.contrasts_csv).name}, answer -> {Path(out.answer_md).name}")
