"""The Snakemake workflow end to end on config/test.yaml, in temporary directories.

Checks what a user relies on: the whole DAG runs; a second run does nothing; a config change
reruns exactly the stages it affects; new datasets/seeds add only their jobs; bad config and
missing data fail with one line naming the key or the places looked; same seed, same numbers.
"""

import copy
import json

import numpy as np
import pytest
import yaml

from conftest import ROOT, planned_jobs, run_snakemake
from test_data import make_idx_dataset

pytestmark = pytest.mark.slow
TEST_CONFIG = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())


def write_config(path, **changes):
    cfg = copy.deepcopy(TEST_CONFIG)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def done(test_config_run):
    """One complete run of the test config (conftest, shared); later tests only dry-run against it."""
    work, cfg, _ = test_config_run
    return work, cfg


def result_rows(work):
    import pandas as pd

    return pd.read_csv(work / "results" / "tables" / "metrics.csv")


def test_full_run_produces_table(done):
    work, _ = done
    df = result_rows(work)
    expected = {(v, q) for v in TEST_CONFIG["variants"] for q in TEST_CONFIG["quantizers"]}
    assert set(zip(df.variant, df.quantizer)) == expected
    assert (df.n_test_images == TEST_CONFIG["codebook"]["test_images"]).all()
    assert df.psnr_quant_real.between(5, 60).all() and df.ssim_quant_real.between(-1, 1).all()
    md = (work / "results" / "tables" / "metrics.md").read_text()
    assert md.count("| synthetic") == len(df)
    for v in TEST_CONFIG["variants"]:
        run = work / "results" / "synthetic" / v / "seed0"
        assert (run / "vae" / "losses.csv").read_text().count("\n") == TEST_CONFIG["vae"][v]["epochs"] + 1
        assert (run / "logs" / "train_vae.log").read_text().count("epoch ") == TEST_CONFIG["vae"][v]["epochs"]
        assert (run / "benchmarks" / "train_vae.tsv").exists()


def reordered(value):
    """The same config with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    return value


def test_second_run_does_nothing(done, tmp_path):
    work, cfg = done
    assert planned_jobs(work, cfg) == {}
    # the same settings listed in another order are the same settings
    same = tmp_path / "reordered.yaml"
    same.write_text(yaml.safe_dump(reordered(TEST_CONFIG), sort_keys=False))
    assert planned_jobs(work, same) == {}


def test_codebook_change_reruns_only_codebook_and_after(done, tmp_path):
    work, _ = done
    n_var = len(TEST_CONFIG["variants"])
    jobs = planned_jobs(work, write_config(tmp_path / "k.yaml", codebook__K=8))
    for untouched in ("prepare_data", "train_vae", "knn_graph", "riemannian_lengths", "train_classifier"):
        assert untouched not in jobs, jobs
    assert jobs["kmeans_codebook"] == n_var and jobs["geodesic_medoids"] == 2 * n_var
    assert jobs["geodesic_codes"] == 2 * n_var and jobs["train_vqvae"] == n_var
    assert jobs["evaluate"] == n_var * len(TEST_CONFIG["quantizers"]) and jobs["metrics_table"] == 1


def test_graph_k_change_reruns_graph_and_after(done, tmp_path):
    work, _ = done
    n_var = len(TEST_CONFIG["variants"])
    jobs = planned_jobs(work, write_config(tmp_path / "g.yaml", graph={**TEST_CONFIG["graph"], "k": 8}))
    for untouched in ("train_vae", "kmeans_codebook", "train_vqvae"):
        assert untouched not in jobs, jobs
    assert jobs["knn_graph"] == n_var and jobs["riemannian_lengths"] == n_var
    assert jobs["geodesic_medoids"] == 2 * n_var and jobs["geodesic_codes"] == 2 * n_var


def test_vae_change_reruns_vae_and_after(done, tmp_path):
    work, _ = done
    spatial = {**TEST_CONFIG["vae"]["spatial"], "epochs": 3}
    jobs = planned_jobs(work, write_config(tmp_path / "v.yaml", vae__spatial=spatial))
    assert jobs.get("train_vae") == 1 and "prepare_data" not in jobs  # only the spatial VAE
    assert jobs["kmeans_codebook"] == 1 and jobs["knn_graph"] == 1 and jobs["metrics_table"] == 1
    assert "train_vqvae" not in jobs and "train_classifier" not in jobs  # neither depends on the VAE


def test_new_dataset_and_seed_add_only_their_jobs(done, tmp_path):
    work, _ = done
    make_idx_dataset(work / "data" / "MNIST" / "raw", n_train=40, n_test=20)
    jobs = planned_jobs(work, write_config(tmp_path / "d.yaml", datasets=["synthetic", "mnist"]))
    n_var = len(TEST_CONFIG["variants"])
    assert jobs["prepare_data"] == 1 and jobs["train_vae"] == n_var  # mnist's, none of synthetic's
    jobs = planned_jobs(work, write_config(tmp_path / "s.yaml", seeds=[0, 1]))
    assert "prepare_data" not in jobs and jobs["train_vae"] == n_var


def test_bad_config_fails_naming_key(tmp_path):
    for change, key in (({"vae__spatial__epochz": 3}, "vae.spatial.epochz"), ({"codebook__K": "many"}, "codebook.K")):
        proc = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", **change), check=False)
        assert proc.returncode != 0
        assert f"config key '{key}'" in proc.stdout + proc.stderr


def test_missing_dataset_fails_cleanly(tmp_path):
    cfg = write_config(tmp_path / "m.yaml", datasets=["mnist"], data_dir=str(tmp_path / "nodata"))
    proc = run_snakemake(tmp_path, configfile=cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "dataset 'mnist': files not found; looked in" in out and str(tmp_path / "nodata") in out
    assert not list((tmp_path / "results").rglob("*.npz"))  # nothing half-written


def test_same_seed_same_codes_and_metrics(done, tmp_path_factory):
    """A second run in a fresh directory, as far as the codes and the paired metrics (data, VAEs,
    every quantizer, evaluation; not the priors and figures): identical arrays and numbers."""
    work_a, cfg = done
    work_b = tmp_path_factory.mktemp("run_b")
    runs = sorted((work_a / "results").glob("*/*/seed*/*/metrics.json"))  # not the classifier's
    targets = [str(p.relative_to(work_a)) for p in runs]
    assert len(targets) == len(TEST_CONFIG["variants"]) * len(TEST_CONFIG["quantizers"])
    run_snakemake(work_b, *targets, configfile=cfg)
    for path in sorted((work_a / "results").rglob("codes_*.npz")):
        rel = path.relative_to(work_a)
        a, b = np.load(path), np.load(work_b / rel)
        np.testing.assert_array_equal(a["codes"], b["codes"], err_msg=str(rel))
    for path in runs:
        rel = path.relative_to(work_a)
        assert json.loads(path.read_text()) == json.loads((work_b / rel).read_text()), rel


def test_report_builds_with_table_and_figures(done):
    """snakemake --report: every figure a non-empty PNG of the configured width; the table's rows inside."""
    import base64
    import re

    import pandas as pd
    from PIL import Image

    work, cfg = done
    run_snakemake(work, "--report", "report.html", configfile=cfg)
    html = (work / "report.html").read_text()
    embedded = {
        name: base64.b64decode(data)
        for name, data in re.findall(r"data:[\w/+.-]+;charset=utf8;filename=([\w.-]+);base64,([A-Za-z0-9+/=]+)", html)
    }
    table = embedded["metrics.html"].decode()
    df = pd.read_csv(work / "results" / "tables" / "metrics.csv")
    assert table.count("<tr") - 1 == len(df)  # header row + one per result row
    for row in df.itertuples():
        assert f"<td>{row.quantizer}</td>" in table
    width = round(TEST_CONFIG["report"]["fig_width"] * TEST_CONFIG["report"]["dpi"])
    figures = sorted((work / "results").rglob("figures/*.png")) + sorted((work / "results").rglob("analysis/*.png"))
    n_q = len(TEST_CONFIG["quantizers"])
    assert len(figures) == len(TEST_CONFIG["variants"]) * (5 + n_q + 4)
    for png in figures:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] == width and im.size[1] > 50, png
            lo, hi = im.convert("L").getextrema()
            assert hi - lo > 50, f"{png} is blank"
    assert sum(1 for n in embedded if n.endswith(".png")) >= len({p.name for p in figures})
