"""Rate–distortion across codebook sizes K: what each quantizer's codes cost and what they lose.

Pure functions on numpy arrays and pandas DataFrames; rule ``rate_distortion`` fits the codebooks
(geovq.stages.ratedistortion) and rule ``rate_distortion_table`` calls :func:`summary` and
:func:`contrasts_at_k` on what the fits wrote.

* **Rate** of an image: the length in bits of its codes under an ideal context-free entropy coder
  designed on the fit cells' codes (:func:`unigram_rate_bits`): sum over the image's cells of
  ``-log2 p(code)`` with ``p`` the add-½ (Krichevsky–Trofimov) estimate from the codes of the
  train cells the codebook was fitted on, under the same assignment rule. Its mean over test
  images is the cross-entropy of the test codes under the train-code distribution, times the
  cells per image: no prior per K is needed, and a codebook is not rewarded for being fitted to the
  test codes. The fixed-length rate ``cells * log2 K`` is given beside it.
* **Distortion**: per-image MSE of the quantized decode against the real test image
  (quant–real) and against the VAE's own continuous decode (quant–cont), as in rule ``evaluate``.

Every mean has an interval over seeds and test images (geovq.stats.paired_contrast applied to the
(seeds x images) values: the crossed design of the study), and every contrast at a K is a paired
per-image difference on the same images and seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from geovq.stats import paired_contrast

ALPHA_KT = 0.5  # add-1/2 smoothing: the Krichevsky-Trofimov estimator
DISTORTIONS = {"mse_quant_real": "quant–real MSE", "mse_quant_cont": "quant–cont MSE"}
VALUES = ("rate_bits", *DISTORTIONS)  # per-image arrays of a sweep, in this order

SUMMARY_COLUMNS = [
    "dataset",
    "variant",
    "quantizer",
    "assign",
    "K",
    "main_K",
    "fixed_rate_bits",
    "rate_bits",
    "rate_bits_lo",
    "rate_bits_hi",
    "mse_quant_real",
    "mse_quant_real_lo",
    "mse_quant_real_hi",
    "mse_quant_cont",
    "mse_quant_cont_lo",
    "mse_quant_cont_hi",
    "test_codes_used",
    "n_seeds",
    "n_images",
    "method",
]


def code_distribution(fit_codes, K, alpha=ALPHA_KT):
    """Add-``alpha`` estimate of the code probabilities from the fit cells' codes: (K,) float64."""
    fit_codes = np.asarray(fit_codes).ravel()
    if fit_codes.size == 0:
        raise ValueError("code_distribution: no fit codes")
    if fit_codes.min() < 0 or fit_codes.max() >= K:
        raise ValueError(f"code_distribution: codes must lie in [0, {K}), found [{fit_codes.min()}, {fit_codes.max()}]")
    counts = np.bincount(fit_codes, minlength=K).astype(np.float64)
    return (counts + alpha) / (counts.sum() + alpha * K)


def unigram_rate_bits(fit_codes, codes, K, alpha=ALPHA_KT):
    """Per-image code length in bits, (N,) float64, of ``codes`` (N, ...) (one row per image) under
    the add-``alpha`` unigram distribution of ``fit_codes`` (:func:`code_distribution`)."""
    codes = np.asarray(codes)
    p = code_distribution(fit_codes, K, alpha)
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise ValueError(f"unigram_rate_bits: codes must lie in [0, {K}), found [{codes.min()}, {codes.max()}]")
    return (-np.log2(p))[codes.reshape(len(codes), -1)].sum(axis=1)


def _stack(sweeps, value, i_k):
    """(seeds, images) array of ``value`` at K index ``i_k`` of every seed's sweep (seeds x images)."""
    return np.stack([s[value][i_k] for s in sweeps])


def _check_paired(sweeps, where):
    first = sweeps[0]["image_index"]
    for s in sweeps[1:]:
        if not np.array_equal(s["image_index"], first):
            raise ValueError(f"{where}: seeds were scored on different test images; rate-distortion must be paired")
    Ks = [tuple(s["K"]) for s in sweeps]
    if len(set(Ks)) > 1:
        raise ValueError(f"{where}: seeds swept different K lists {sorted(set(Ks))}")


def group_sweeps(sweeps):
    """{(dataset, variant, quantizer, assign): [sweep of each seed, by seed]} from a list of dicts
    with keys dataset, variant, quantizer, assign, seed, K (nK,), cells (int), main_K (int),
    image_index (N,), codes_used (nK,) and the VALUES arrays (nK, N)."""
    groups = {}
    for s in sweeps:
        key = (s["dataset"], s["variant"], s["quantizer"], s["assign"])
        groups.setdefault(key, []).append(s)
    for key, ss in groups.items():
        seeds = [s["seed"] for s in ss]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{'/'.join(key)}: a seed appears twice")
        ss.sort(key=lambda s: s["seed"])
        _check_paired(ss, "/".join(key))
    return groups


def summary(sweeps, alpha=0.05) -> pd.DataFrame:
    """One row per dataset x variant x quantizer x assign x K: mean rate and distortions with
    their intervals over seeds and images, the fixed-length rate and the test codes used."""
    rows = []
    for (dataset, variant, q, assign), ss in group_sweeps(sweeps).items():
        for i_k, K in enumerate(ss[0]["K"]):
            row = {
                "dataset": dataset,
                "variant": variant,
                "quantizer": q,
                "assign": assign,
                "K": int(K),
                "main_K": bool(int(K) == int(ss[0]["main_K"])),
                "fixed_rate_bits": float(ss[0]["cells"] * math.log2(int(K))),
                "test_codes_used": float(np.mean([s["codes_used"][i_k] for s in ss])),
            }
            for v in VALUES:
                vals = _stack(ss, v, i_k)
                if not np.isfinite(vals).all():  # a column that does not apply (vqvae: no quant-cont)
                    row.update({v: np.nan, f"{v}_lo": np.nan, f"{v}_hi": np.nan})
                    continue
                r = paired_contrast(vals, alpha=alpha)
                row.update({v: r["mean"], f"{v}_lo": r["lo"], f"{v}_hi": r["hi"]})
                row["n_seeds"], row["n_images"], row["method"] = r["n_seeds"], r["n_images"], r["method"]
            rows.append(row)
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return df.sort_values(["dataset", "variant", "quantizer", "assign", "K"], kind="stable").reset_index(drop=True)


CONTRAST_COLUMNS = [
    "dataset",
    "variant",
    "K",
    "contrast",
    "factor",
    "metric",
    "a_mean",
    "b_mean",
    "diff",
    "diff_lo",
    "diff_hi",
    "rel_diff",
    "p_value",
    "a_rate_bits",
    "b_rate_bits",
    "n_seeds",
    "n_images",
]


def contrasts_at_k(sweeps, specs, alpha=0.05) -> pd.DataFrame:
    """Each study contrast ``{"a": "q/assign", "b": ..., "factor": ...}`` at every K both sides
    swept: paired per-image differences A − B of each distortion, interval over seeds and images.
    A contrast whose sides were not both swept (e.g. the VQ-VAE, at one K only) is left out."""
    groups = group_sweeps(sweeps)
    rows = []
    datasets = sorted({k[:2] for k in groups})
    for dataset, variant in datasets:
        for spec in specs:
            a = groups.get((dataset, variant, *spec["a"].split("/")))
            b = groups.get((dataset, variant, *spec["b"].split("/")))
            if a is None or b is None:
                continue
            seeds = [s["seed"] for s in a]
            if seeds != [s["seed"] for s in b]:
                continue
            if not np.array_equal(a[0]["image_index"], b[0]["image_index"]):
                raise ValueError(f"{dataset}/{variant} {spec['a']} vs {spec['b']}: not the same test images")
            for K in sorted(set(a[0]["K"]) & set(b[0]["K"])):
                ia, ib = list(a[0]["K"]).index(K), list(b[0]["K"]).index(K)
                for metric in DISTORTIONS:
                    va, vb = _stack(a, metric, ia), _stack(b, metric, ib)
                    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
                        continue
                    r = paired_contrast(va - vb, alpha=alpha)
                    bm = float(vb.mean())
                    rows.append(
                        {
                            "dataset": dataset,
                            "variant": variant,
                            "K": int(K),
                            "contrast": f"{spec['a']} − {spec['b']}",
                            "factor": spec.get("factor", ""),
                            "metric": metric,
                            "a_mean": float(va.mean()),
                            "b_mean": bm,
                            "diff": r["mean"],
                            "diff_lo": r["lo"],
                            "diff_hi": r["hi"],
                            "rel_diff": r["mean"] / bm if bm else np.nan,
                            "p_value": r["p_value"],
                            "a_rate_bits": float(_stack(a, "rate_bits", ia).mean()),
                            "b_rate_bits": float(_stack(b, "rate_bits", ib).mean()),
                            "n_seeds": r["n_seeds"],
                            "n_images": r["n_images"],
                        }
                    )
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def _g(x, digits=4):
    """``x`` to ``digits`` significant digits, a leading minus as the minus sign, '–' when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    s = f"{x:.{digits}g}"
    return "−" + s[1:] if s.startswith("-") else s


def summary_markdown(df: pd.DataFrame) -> str:
    """The summary as a Markdown table: mean [interval] per cell."""
    head = "| dataset | variant | quantizer/assign | K | rate bits/image [95 % CI] | fixed bits | quant–real MSE [95 % CI] | quant–cont MSE [95 % CI] | codes used | seeds × images |"
    lines = [head, "|" + "---|" * 4 + "---:|" * 6]
    for r in df.itertuples(index=False):
        cells = [
            r.dataset,
            r.variant,
            f"{r.quantizer}/{r.assign}",
            f"{r.K}{' (main)' if r.main_K else ''}",
            f"{_g(r.rate_bits)} [{_g(r.rate_bits_lo)}, {_g(r.rate_bits_hi)}]",
            _g(r.fixed_rate_bits),
            f"{_g(r.mse_quant_real)} [{_g(r.mse_quant_real_lo)}, {_g(r.mse_quant_real_hi)}]",
            f"{_g(r.mse_quant_cont)} [{_g(r.mse_quant_cont_lo)}, {_g(r.mse_quant_cont_hi)}]",
            _g(r.test_codes_used),
            f"{r.n_seeds} × {r.n_images}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def contrasts_markdown(df: pd.DataFrame) -> str:
    """Contrasts at each K as a Markdown table (same K, so the same fixed-length rate; the
    entropy rates of both sides are shown, they differ)."""
    head = "| dataset | variant | K | contrast | metric | A − B [95 % CI] | relative | p | rate A / B bits |"
    lines = [head, "|" + "---|" * 5 + "---:|" * 4]
    for r in df.itertuples(index=False):
        lines.append(
            f"| {r.dataset} | {r.variant} | {r.K} | {r.contrast} | {DISTORTIONS[r.metric]} | "
            f"{_g(r.diff, 3)} [{_g(r.diff_lo, 3)}, {_g(r.diff_hi, 3)}] | {_g(100 * r.rel_diff, 3)} % | "
            f"{_g(r.p_value, 2)} | {_g(r.a_rate_bits)} / {_g(r.b_rate_bits)} |"
        )
    return "\n".join(lines)
