"""Interrupted runs, full disks and reproducibility (docs/reproducibility.md).

- The same config gives a byte-identical table whatever ``--cores`` (jobs compute with config
  ``threads``, not with the cores Snakemake grants), and whether its jobs run in processes of their
  own or forked from a warm server (geovq.stages.warm; the shared run uses it, the --cores 1 run not).
- A run killed mid-training (SIGKILL of the whole Snakemake process group) is finished by
  ``snakemake --unlock`` and the same command again, with a byte-identical table.
- A full disk stops a stage with one line naming the file; nothing is left under the final name,
  and no temporary file is left behind.
"""

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import ROOT, SNAKEMAKE, run_snakemake

TABLE = Path("results") / "tables" / "metrics.csv"


def snakemake_cmd(workdir, configfile, *args, cores=2):
    return [
        str(SNAKEMAKE),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        *args,
        "--configfile",
        str(configfile),
    ]


def small_config(tmp_path, variants=("spatial",), quantizers=("kmeans", "riemannian", "vqvae")):
    """config/test.yaml cut to its first seed, one variant and a few quantizers: a run's rows do not
    depend on the seeds, variants or quantizers it leaves out, so comparing them with the shared run's
    rows costs a fifth of a run, not a whole one."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["seeds"] = cfg["seeds"][:1]
    cfg["variants"] = list(variants)
    cfg["quantizers"] = list(quantizers)
    path = tmp_path.parent / f"{tmp_path.name}_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg["seeds"][0]


def same_table(work_a, work_b, seed):
    """Every row of run b's table (seed ``seed``) the same, text for text in every column b has, as run
    a's row of that dataset, variant, quantizer and assignment (a run of fewer quantizers may have
    fewer columns); every metrics.json of run b byte for byte and every quantizer's codes the same as
    run a's: the same seed gives the same codes and numbers in a fresh directory."""
    import csv

    keys = ("dataset", "variant", "quantizer", "assign", "seed")

    def rows(work):
        with open(work / TABLE, newline="") as f:
            reader = csv.DictReader(f)
            by_key = {tuple(r[k] for k in keys): r for r in reader if r["seed"] == str(seed)}
        return reader.fieldnames, by_key

    (cols_a, la), (cols_b, lb) = rows(work_a), rows(work_b)
    assert set(cols_b) <= set(cols_a), f"columns of {work_b / TABLE} that {work_a / TABLE} lacks"
    assert lb, f"{work_b / TABLE} has no rows of seed {seed}"
    missing = sorted(set(lb) - set(la))
    assert not missing, f"rows of {work_b / TABLE} that {work_a / TABLE} lacks: {missing}"
    diff = [(k, c, la[k][c], lb[k][c]) for k in sorted(lb) for c in cols_b if la[k][c] != lb[k][c]]
    if diff:
        pytest.fail(f"{TABLE} differs in {len(diff)} cells of {len(lb)} rows; first: " + "; ".join(map(str, diff[:4])))
    files = sorted((work_b / "results").glob(f"*/*/seed{seed}/*/eval/*/metrics.json"))
    assert files
    for path in files:
        rel = path.relative_to(work_b)
        assert path.read_bytes() == (work_a / rel).read_bytes(), rel
    codes = sorted((work_b / "results").glob(f"*/*/seed{seed}/*/codes_*.npz"))  # every quantizer's codes
    assert codes
    for path in codes:
        rel = path.relative_to(work_b)
        np.testing.assert_array_equal(np.load(path)["codes"], np.load(work_a / rel)["codes"], err_msg=str(rel))


@pytest.mark.slow
def test_cores_and_warm_processes_do_not_change_the_table(test_config_run, tmp_path):
    """config/test.yaml with --cores 1, every job in a process of its own (GEOVQ_WARM=0), in a fresh
    directory: the same bytes as the shared --cores 2 run, whose jobs were forked from a warm server."""
    work_a, _, _ = test_config_run
    cfg, seed = small_config(tmp_path)
    env = {**os.environ, "GEOVQ_WARM": "0"}
    proc = subprocess.run(snakemake_cmd(tmp_path, cfg, cores=1), capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    same_table(work_a, tmp_path, seed)
    for log in (tmp_path / "results").rglob("logs/*.log"):  # and every job ran in a process of its own
        assert "a process of its own" in log.read_text(), log
    assert "forked from a warm server" in next((work_a / "results").rglob("logs/train_vae.log")).read_text()


@pytest.mark.slow
def test_killed_run_unlock_and_rerun(test_config_run, tmp_path):
    """SIGKILL to Snakemake and every job once a VAE has logged its first epoch; then the README's
    recipe: `snakemake --unlock`, the same command again. It finishes with the same table."""
    work_a, _, _ = test_config_run
    cfg, seed = small_config(tmp_path, quantizers=("kmeans",))
    cmd = snakemake_cmd(tmp_path, cfg)
    log = open(tmp_path.parent / f"{tmp_path.name}_killed_run.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            logs = (tmp_path / "results").glob("*/*/seed*/logs/train_vae.log")
            if any("epoch 1/" in p.read_text() for p in logs):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before any VAE logged an epoch: nothing to interrupt"
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its jobs: one process group
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert not (tmp_path / TABLE).exists()
    assert list((tmp_path / ".snakemake" / "locks").iterdir()), "the killed run left no lock: nothing to test"
    locked = subprocess.run(cmd, capture_output=True, text=True)  # what a user sees first
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    unlock = subprocess.run(cmd + ["--unlock"], capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stdout[-3000:] + unlock.stderr[-3000:]
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    same_table(work_a, tmp_path, seed)
    again = run_snakemake(tmp_path, "-n", configfile=cfg)
    assert "Nothing to be done" in again.stdout + again.stderr


# ---------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root only); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(proc.stderr or proc.stdout).strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)  # busy (a file left open): detach it now


class Files(SimpleNamespace):
    def __iter__(self):
        return iter(vars(self).values())


def test_full_disk_is_one_line_and_leaves_no_artifact(small_disk, tmp_path, capsys, one_thread):
    """prepare_data (as Snakemake runs it) writing a 1.3 MB split onto a 1 MiB disk."""
    from geovq.stages.data import prepare_data
    from geovq.stages.runner import entry

    out = small_disk / "results" / "synthetic" / "data"
    smk = SimpleNamespace(
        rule="prepare_data",
        config={"threads": 1},
        log=[str(tmp_path / "prepare_data.log")],
        input=Files(),
        output=Files(train=str(out / "train.npz"), test=str(out / "test.npz")),
        params=SimpleNamespace(
            dataset="synthetic",
            data_dir=str(tmp_path / "data"),
            download=False,
            options={"n_train": 5000, "n_test": 100, "size": 16, "classes": 4, "channels": 1},
            image_dataset=None,
        ),
    )
    with pytest.raises(SystemExit) as e:
        entry(smk, prepare_data)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("geovq error in rule prepare_data: ") and str(out / "train.npz") in err, err
    assert "no space left on device" in err and "rerun the same command" in err, err
    assert sorted(p.name for p in small_disk.rglob("*") if p.is_file()) == [], "an artifact or temp file was left"
    # the same stage with room to write: it is only the disk
    smk.output = Files(train=str(tmp_path / "train.npz"), test=str(tmp_path / "test.npz"))
    entry(smk, prepare_data)
    assert np.load(tmp_path / "train.npz")["images"].nbytes > 2**20


def test_full_disk_for_a_checkpoint(small_disk):
    """torch checkpoints too (torch.save's own writer would report a cryptic RuntimeError)."""
    import torch

    from geovq.io import GeovqError, save_checkpoint

    path = small_disk / "model.pt"
    with pytest.raises(GeovqError, match="no space left on device") as e:
        save_checkpoint(path, "vae", torch.nn.Linear(1000, 400))  # 1.6 MB of weights
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert not list(small_disk.iterdir())
