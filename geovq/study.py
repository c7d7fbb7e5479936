"""The study's tables and written answer: summaries over seeds, paired contrasts, sentences.

Pure functions on pandas DataFrames and numpy arrays; the pipeline reads and writes the files.

* :func:`summary` / :func:`summary_markdown`: mean and sd over seeds of the key metrics, one
  row per dataset x variant x quantizer x assign.
* :func:`contrasts` / :func:`contrasts_markdown`: paired per-image differences between two
  sides (``"quantizer/assign"``), per dataset x variant, with intervals from
  :func:`geovq.stats.paired_contrast`.
* :func:`answer_markdown` / :func:`answer_html`: one sentence per contrast.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from geovq.stats import paired_contrast

GROUP_COLUMNS = ["dataset", "variant", "quantizer", "assign"]

KEY_COLUMNS = [
    "mse_quant_real",
    "psnr_quant_real",
    "ssim_quant_real",
    "mse_quant_cont",
    "mse_cont_real",
    "test_perplexity",
    "test_dead_codes",
    "test_bits_per_token",
    "fd_samples_test",
    "fd_quant_recon_test",
]

CONTRAST_METRICS = ["mse_quant_real", "psnr_quant_real", "ssim_quant_real", "mse_quant_cont"]

CONTRAST_COLUMNS = [
    "dataset",
    "variant",
    "contrast",
    "factor",
    "metric",
    "a_mean",
    "b_mean",
    "diff",
    "diff_lo",
    "diff_hi",
    "rel_diff",
    "rel_lo",
    "rel_hi",
    "p_value",
    "df",
    "n_seeds",
    "n_images",
    "method",
    "seeds",
    "seed_diffs",
    "seeds_agree",
]

# Metrics the written answer reports, with their names in a sentence.
ANSWER_METRICS = {"mse_quant_real": "quant–real MSE", "mse_quant_cont": "quant–cont MSE"}

MINUS = "\u2212"
DASH = "–"  # shown where a value is missing


# ---------------------------------------------------------------- formatting helpers


def _minus(s: str) -> str:
    """A leading ASCII minus as the unicode minus sign (exponents keep '-')."""
    return MINUS + s[1:] if s.startswith("-") else s


def _sig(x, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits, '–' for NaN/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return _minus(f"{x:.{digits}g}")


def _interval(diff, lo, hi) -> tuple[str, str, str]:
    """Estimate (3 significant digits) and interval bounds in one notation for prose and tables:
    fixed decimals when the largest magnitude is in [0.1, 1e4), else e-notation (bounds with 2
    significant digits)."""
    vals = (diff, lo, hi)
    if any(v is None or not math.isfinite(v) for v in vals):
        return tuple(DASH if v is None or math.isnan(v) else _minus(str(v)) for v in vals)
    big = max(abs(v) for v in vals)
    if big == 0:
        return "0", "0", "0"
    if 0.1 <= big < 1e4:
        ref = abs(diff) if diff != 0 else big
        dec = max(0, 2 - math.floor(math.log10(ref)))
        dec = min(dec, 3 - math.floor(math.log10(big)))  # a tiny estimate beside wide bounds
        return tuple(_minus(f"{v:.{dec}f}") for v in vals)
    return _minus(f"{diff:.2e}"), _minus(f"{lo:.1e}"), _minus(f"{hi:.1e}")


def _pct(rel) -> str:
    """A relative difference as a percentage: one decimal from 1 %, two significant digits below."""
    if rel is None or not math.isfinite(rel):
        return DASH
    p = 100.0 * rel
    if p == 0 or abs(p) >= 1:
        return _minus(f"{p:.1f}")
    return _minus(f"{p:.2g}")


def _p(p) -> str:
    """A p-value for tables and prose ("< 1e-300" where it underflowed to 0)."""
    if p is None or math.isnan(p):
        return DASH
    if p == 0:
        return "< 1e-300"
    if p >= 0.1:
        return f"{p:.2f}"
    if p >= 0.001:  # three significant digits near the usual thresholds: 0.0496 stays below 0.05
        return f"{p:.3g}"
    return f"{p:.1e}"


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g} %"


def _md_table(headers, rows, align=None) -> str:
    """A GitHub pipe table with padded columns; ``align`` is a string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    align = align or "l" * len(headers)

    def line(r):
        return "| " + " | ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(r, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]]) + "\n"


# ---------------------------------------------------------------- summary over seeds


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of the key metrics.

    Parameters
    ----------
    df : DataFrame
        One row per dataset x variant x quantizer x assign x seed: columns ``dataset``,
        ``variant``, ``quantizer``, ``assign``, ``seed`` and metric columns (NaN where a metric
        does not apply).

    Returns
    -------
    DataFrame
        One row per dataset x variant x quantizer x assign (in order of first appearance) with
        ``n_seeds`` and, for each of :data:`KEY_COLUMNS` present in ``df``, ``<col>_mean`` and
        ``<col>_sd`` (sd over seeds, ``ddof=1``; NaN with one seed). NaN values are skipped, so a
        metric that does not apply stays NaN.

    Raises
    ------
    ValueError
        If a grouping column or ``seed`` is missing, or a seed appears twice in one group.
    """
    missing = [c for c in GROUP_COLUMNS + ["seed"] if c not in df.columns]
    if missing:
        raise ValueError(f"summary: metrics table lacks column(s) {missing}")
    dup = df.duplicated(GROUP_COLUMNS + ["seed"], keep=False)
    if dup.any():
        first = df.loc[dup, GROUP_COLUMNS + ["seed"]].iloc[0].tolist()
        raise ValueError(f"summary: {int(dup.sum())} rows share dataset/variant/quantizer/assign/seed, e.g. {first}")
    keys = [c for c in KEY_COLUMNS if c in df.columns]
    vals = df[GROUP_COLUMNS + ["seed"]].copy()
    for c in keys:
        vals[c] = pd.to_numeric(df[c], errors="raise").astype(float)
    g = vals.groupby(GROUP_COLUMNS, sort=False, dropna=False)
    out = g["seed"].nunique().rename("n_seeds").to_frame()
    means, sds = g[keys].mean(), g[keys].std(ddof=1)
    for c in keys:
        out[f"{c}_mean"] = means[c]
        out[f"{c}_sd"] = sds[c]
    return out.reset_index()


def summary_markdown(s: pd.DataFrame) -> str:
    """A Markdown table of :func:`summary`'s output: one column per key metric as "mean ± sd".

    Values have 4 significant digits; "–" stands for NaN (a metric that does not apply, or the
    sd of a single seed).
    """
    keys = [c for c in KEY_COLUMNS if f"{c}_mean" in s.columns]
    headers = ["dataset", "variant", "quantizer", "assign", "seeds"] + keys
    rows = []
    for _, r in s.iterrows():
        cells = [r["dataset"], r["variant"], r["quantizer"], r["assign"], int(r["n_seeds"])]
        for c in keys:
            m, sd = r[f"{c}_mean"], r.get(f"{c}_sd", float("nan"))
            cells.append(DASH if pd.isna(m) else f"{_sig(float(m))} ± {_sig(float(sd))}")
        rows.append(cells)
    return _md_table(headers, rows, "lllll" + "r" * len(keys))


# ---------------------------------------------------------------- contrasts


def parse_side(side: str) -> tuple[str, str]:
    """``"riemannian/geodesic"`` -> ``("riemannian", "geodesic")``."""
    parts = side.split("/") if isinstance(side, str) else []
    parts = [p.strip() for p in parts]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"contrast side {side!r} is not 'quantizer/assign' (e.g. 'riemannian/geodesic')")
    return parts[0], parts[1]


def _check_specs(specs):
    parsed = []
    for j, spec in enumerate(specs):
        if not isinstance(spec, dict) or "a" not in spec or "b" not in spec:
            raise ValueError(f"contrast spec #{j} {spec!r} needs keys 'a' and 'b'")
        a, b = parse_side(spec["a"]), parse_side(spec["b"])
        if a == b:
            raise ValueError(f"contrast spec #{j} compares {spec['a']!r} with itself")
        parsed.append((a, b, "/".join(a), "/".join(b), str(spec.get("factor", "") or "")))
    return parsed


def _image_index(arrays, side, seed):
    if "image_index" not in arrays:
        raise ValueError(f"per-image results of {side} seed {seed} have no 'image_index'")
    idx = np.asarray(arrays["image_index"])
    if idx.ndim != 1:
        raise ValueError(f"image_index of {side} seed {seed} is not one-dimensional (shape {idx.shape})")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"image_index of {side} seed {seed} repeats images")
    return idx


def _metric_stack(per_image, dv, side_key, side, seeds, metric, n):
    """(S, N) float array of ``metric`` for one side, or None where it does not apply on every seed."""
    rows = []
    for seed in seeds:
        arrays = per_image[dv + side_key + (seed,)]
        if metric not in arrays:
            rows.append(None)
            continue
        x = np.asarray(arrays[metric], dtype=np.float64)
        if x.shape != (n,):
            raise ValueError(f"{metric} of {side} seed {seed} has shape {x.shape}, image_index has {n} images")
        rows.append(x)
    if all(r is None or np.isnan(r).all() for r in rows):
        return None  # does not apply to this side
    for seed, r in zip(seeds, rows):
        if r is None or not np.isfinite(r).all():
            k = n if r is None else int((~np.isfinite(r)).sum())
            raise ValueError(
                f"{metric} of {_dv_name(dv)} {side} seed {seed} has {k} missing or "
                f"non-finite per-image values while other seeds have values"
            )
    return np.stack(rows)


def _dv_name(dv) -> str:
    return f"{dv[0]}/{dv[1]}"


def seeds_agreeing(seed_diffs, estimate) -> int:
    """How many seeds' mean paired differences have the sign of the overall ``estimate`` (0 when
    the estimate is exactly 0: no direction to agree with)."""
    sign = np.sign(estimate)
    return int((np.sign(np.asarray(seed_diffs)) == sign).sum()) if sign != 0 else 0


def seed_diffs_of(row) -> np.ndarray:
    """The per-seed mean differences of one :func:`contrasts` row (its ``seed_diffs`` column)."""
    text = row["seed_diffs"]
    return np.array([float(v) for v in str(text).split(";")]) if isinstance(text, str) and text else np.array([])


def contrasts(per_image: dict, specs: list, alpha: float = 0.05, metrics: list | None = None) -> pd.DataFrame:
    """Paired contrasts between two sides, per dataset x variant, over seeds and images.

    Parameters
    ----------
    per_image : dict
        ``(dataset, variant, quantizer, assign, seed) -> {"image_index": array, metric: array,
        ...}``; metric arrays are per test image, aligned with ``image_index``, and all-NaN where
        the metric does not apply to that quantizer (a missing key counts the same).
    specs : list of dict
        ``{"a": "quantizer/assign", "b": "quantizer/assign", "factor": "what changes"}``; the
        contrast is ``A - B``.
    alpha : float, default 0.05
        Intervals are two-sided ``1 - alpha``.
    metrics : list of str, optional
        Metrics to contrast; default :data:`CONTRAST_METRICS`.

    Returns
    -------
    DataFrame
        Columns :data:`CONTRAST_COLUMNS`, one row per dataset x variant x spec x metric.
        ``contrast`` is ``"a − b"`` (unicode minus); ``diff``/``diff_lo``/``diff_hi`` are the mean
        paired difference and its interval (:func:`geovq.stats.paired_contrast`);
        ``rel_diff = diff / b_mean`` and ``rel_lo``, ``rel_hi`` are the interval divided by
        ``b_mean`` (taken as fixed; NaN when ``b_mean`` is 0). ``seeds`` and ``seed_diffs`` list the
        seeds and each seed's mean paired difference (``;``-separated, in the same order; full
        precision), ``seeds_agree`` how many of them have the sign of ``diff``
        (:func:`seeds_agreeing`). ``attrs["skipped"]`` lists the
        specs not computed for a dataset x variant (a side without results, or the two sides
        with different seeds) as dicts with ``dataset, variant, a, b, factor, reason``;
        ``attrs["left_out"]`` lists metrics left out because they do not apply to a side;
        ``attrs["alpha"]`` is ``alpha``.

    Raises
    ------
    ValueError
        On a malformed spec, if ``image_index`` differs between A and B in a seed or between
        seeds (naming both sides and the seed), or if a metric that applies has missing values
        in some seeds only.
    """
    metrics = list(CONTRAST_METRICS if metrics is None else metrics)
    parsed = _check_specs(specs)
    by_dv: dict = {}
    for key in per_image:
        if len(key) != 5:
            raise ValueError(f"per_image key {key!r} is not (dataset, variant, quantizer, assign, seed)")
        by_dv.setdefault(tuple(key[:2]), {}).setdefault(tuple(key[2:4]), set()).add(key[4])

    rows, skipped, left_out = [], [], []
    for dv, sides in by_dv.items():
        for a, b, a_name, b_name, factor in parsed:
            info = {"dataset": dv[0], "variant": dv[1], "a": a_name, "b": b_name, "factor": factor}
            absent = [n for s, n in ((a, a_name), (b, b_name)) if s not in sides]
            if absent:
                skipped.append({**info, "reason": f"no results for {' and '.join(absent)}"})
                continue
            if sides[a] != sides[b]:
                skipped.append(
                    {
                        **info,
                        "reason": f"different seeds: {a_name} has {sorted(sides[a])}, {b_name} has {sorted(sides[b])}",
                    }
                )
                continue
            seeds = sorted(sides[a])
            ref = None
            for seed in seeds:
                ia = _image_index(per_image[dv + a + (seed,)], a_name, seed)
                ib = _image_index(per_image[dv + b + (seed,)], b_name, seed)
                if not np.array_equal(ia, ib):
                    raise ValueError(
                        f"{_dv_name(dv)}: image_index of {a_name} and {b_name} differ "
                        f"in seed {seed}; a paired contrast needs the same test images"
                    )
                if ref is None:
                    ref, ref_seed = ia, seed
                elif not np.array_equal(ia, ref):
                    raise ValueError(
                        f"{_dv_name(dv)}: image_index of {a_name} / {b_name} in seed "
                        f"{seed} differs from seed {ref_seed}; every seed must score the "
                        f"same test images"
                    )
            n = len(ref)
            contrast = f"{a_name} {MINUS} {b_name}"
            for m in metrics:
                xa = _metric_stack(per_image, dv, a, a_name, seeds, m, n)
                xb = _metric_stack(per_image, dv, b, b_name, seeds, m, n)
                if xa is None or xb is None:
                    na = [nm for x, nm in ((xa, a_name), (xb, b_name)) if x is None]
                    left_out.append({**info, "metric": m, "reason": f"does not apply to {' and '.join(na)}"})
                    continue
                d = xa - xb
                r = paired_contrast(d, alpha=alpha)
                seed_diffs = d.mean(axis=1)
                a_mean, b_mean = float(xa.mean()), float(xb.mean())
                if b_mean != 0:
                    rel = r["mean"] / b_mean
                    rel_lo, rel_hi = sorted((r["lo"] / b_mean, r["hi"] / b_mean))
                else:
                    rel = rel_lo = rel_hi = float("nan")
                rows.append(
                    {
                        "dataset": dv[0],
                        "variant": dv[1],
                        "contrast": contrast,
                        "factor": factor,
                        "metric": m,
                        "a_mean": a_mean,
                        "b_mean": b_mean,
                        "diff": r["mean"],
                        "diff_lo": r["lo"],
                        "diff_hi": r["hi"],
                        "rel_diff": rel,
                        "rel_lo": rel_lo,
                        "rel_hi": rel_hi,
                        "p_value": r["p_value"],
                        "df": r["df"],
                        "n_seeds": r["n_seeds"],
                        "n_images": r["n_images"],
                        "method": r["method"],
                        "seeds": ";".join(str(s) for s in seeds),
                        "seed_diffs": ";".join(repr(float(v)) for v in seed_diffs),
                        "seeds_agree": seeds_agreeing(seed_diffs, r["mean"]),
                    }
                )
    out = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    out.attrs["skipped"] = skipped
    out.attrs["left_out"] = left_out
    out.attrs["alpha"] = alpha
    return out


def contrasts_markdown(c: pd.DataFrame) -> str:
    """A Markdown table of :func:`contrasts`' output: dataset, variant, contrast, metric,
    diff [lo, hi], rel %, p, seeds x images."""
    headers = [
        "dataset",
        "variant",
        "contrast",
        "metric",
        "diff [lo, hi]",
        "rel %",
        "p",
        "seeds agree",
        "seeds × images",
    ]
    rows = []
    for _, r in c.iterrows():
        rows.append(
            [
                r["dataset"],
                r["variant"],
                r["contrast"],
                r["metric"],
                "{} [{}, {}]".format(*_interval(r["diff"], r["diff_lo"], r["diff_hi"])),
                _pct(r["rel_diff"]),
                _p(r["p_value"]),
                f"{int(r['seeds_agree'])}/{int(r['n_seeds'])}",
                f"{int(r['n_seeds'])} × {int(r['n_images'])}",
            ]
        )
    text = _md_table(headers, rows, "llllrrrrr")
    skipped = c.attrs.get("skipped") or []
    if skipped:
        text += "\nNot computed:\n\n" + "".join(
            f"- {s['dataset']}/{s['variant']}: {s['a']} {MINUS} {s['b']}: {s['reason']}\n" for s in skipped
        )
    return text


# ---------------------------------------------------------------- written answer


def _agreement(r) -> str:
    """ "lower in 5 of 6 seeds": the direction of the estimate and how many seeds' own means share it."""
    S = int(r["n_seeds"])
    if r["diff"] == 0:
        return f"no difference over {S} seed{'s' if S != 1 else ''}"
    return f"{'lower' if r['diff'] < 0 else 'higher'} in {int(r['seeds_agree'])} of {S} seed{'s' if S != 1 else ''}"


def _clause(r, level: str) -> str:
    name = ANSWER_METRICS[r["metric"]]
    a_side = r["contrast"].split(f" {MINUS} ")[0]
    est, lo, hi = _interval(r["diff"], r["diff_lo"], r["diff_hi"])
    text = (
        f"{name} {_agreement(r)}; {est} ({_pct(r['rel_diff'])} %), {level} CI [{lo}, {hi}], "
        f"p {'' if r['p_value'] == 0 else '= '}{_p(r['p_value'])}, "
        f"{int(r['n_seeds'])} seed{'s' if int(r['n_seeds']) != 1 else ''} × {int(r['n_images'])} images"
    )
    if r["diff_hi"] < 0:
        verdict = f"{a_side} is lower"
    elif r["diff_lo"] > 0:
        verdict = f"{a_side} is higher"
    else:
        verdict = "not distinguishable from zero"
    return f"{text} — {verdict}"


def _answer_parts(c: pd.DataFrame, alpha: float):
    """(method paragraph, [(heading, [sentence, ...]), ...], [note, ...]) shared by md and html."""
    if not 0 < alpha < 1:
        raise ValueError(f"answer: alpha must be in (0, 1), got {alpha!r}")
    used = c.attrs.get("alpha")
    if used is not None and not math.isclose(used, alpha):
        raise ValueError(f"answer: contrasts were computed with alpha={used}, asked to report alpha={alpha}")
    level = _level(alpha)
    methods = sorted(set(c["method"])) if len(c) else []
    n_desc = sorted({(int(s), int(n)) for s, n in zip(c["n_seeds"], c["n_images"])}) if len(c) else []
    sizes = ", ".join(f"{s} seed{'s' if s != 1 else ''} × {n} test images" for s, n in n_desc) or "no data"
    method = (
        f"Each contrast A {MINUS} B is the mean over seeds and test images of the paired per-image "
        f"difference between two quantizers scored on the same test images ({sizes}). Because every "
        f"seed scores the same images, its standard error has a seed component (variance of the "
        f"per-seed means over the number of seeds) and an image component (variance of the "
        f"per-image means over the number of images); the {level} interval is a t interval with "
        f"Welch–Satterthwaite degrees of freedom and p is the two-sided p-value of the same t "
        f"statistic (α = {alpha:g}; method: {'; '.join(methods) or '–'}). A difference is called "
        f"lower or higher only when its interval excludes zero. Before each interval: in how many "
        f"seeds the seed's own mean paired difference has the estimate's sign. Relative "
        f"differences are relative to B's mean."
    )
    sections = []
    for (ds, var), g in c.groupby(["dataset", "variant"], sort=False, dropna=False):
        sentences = []
        for (contrast, factor), gc in g.groupby(["contrast", "factor"], sort=False, dropna=False):
            factor = "" if pd.isna(factor) else str(factor)
            clauses = [_clause(r, level) for m in ANSWER_METRICS for _, r in gc[gc["metric"] == m].iterrows()]
            if not clauses:
                continue
            head = f"{contrast} ({factor})" if factor else contrast
            sentences.append(f"{head}: " + "; ".join(clauses) + ".")
        if sentences:
            sections.append((f"{ds}, {var}", sentences))
    notes = [
        f"{s['dataset']}/{s['variant']}: {s['a']} {MINUS} {s['b']} not computed ({s['reason']})."
        for s in c.attrs.get("skipped") or []
    ]
    return method, sections, notes


def answer_markdown(c: pd.DataFrame, alpha: float = 0.05) -> str:
    """The written answer: a "# Answer" heading, the method, then per dataset x variant one
    sentence per contrast (quant–real MSE and, where present, quant–cont MSE).

    ``alpha`` must be the one :func:`contrasts` used (checked against ``c.attrs["alpha"]`` when
    present): the verdicts read the stored intervals.
    """
    method, sections, notes = _answer_parts(c, alpha)
    out = ["# Answer", "", method, ""]
    if not sections:
        out += ["No contrasts of quant–real or quant–cont MSE were computed.", ""]
    for heading, sentences in sections:
        out += [f"## {heading}", ""] + [f"- {s}" for s in sentences] + [""]
    if notes:
        out += ["## Not computed", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def answer_html(c: pd.DataFrame, alpha: float = 0.05) -> str:
    """The content of :func:`answer_markdown` as a minimal HTML fragment (for snakemake --report)."""
    method, sections, notes = _answer_parts(c, alpha)
    e = html.escape
    out = ["<h1>Answer</h1>", f"<p>{e(method)}</p>"]
    if not sections:
        out.append("<p>No contrasts of quant–real or quant–cont MSE were computed.</p>")
    for heading, sentences in sections:
        out.append(f"<h2>{e(heading)}</h2>")
        out.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in sentences) + "</ul>")
    if notes:
        out.append("<h2>Not computed</h2>")
        out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(out) + "\n"
