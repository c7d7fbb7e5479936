"""Shared fixtures: repository paths and a runner for the Snakemake workflow in a temp dir."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def run_snakemake(workdir, *args, configfile=None, check=True, env=None):
    """Run the repository's Snakefile with ``workdir`` as working directory; return the process."""
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    cmd += list(args)
    if configfile:  # after the targets: --configfile takes every word up to the next option
        cmd += ["--configfile", str(configfile)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir, configfile, *args):
    """{rule: count} of the jobs a dry run (with further snakemake ``args``) would execute."""
    # --quiet=rules, not --quiet rules: the option takes a list and would swallow a target among ``args``
    proc = run_snakemake(workdir, "-n", "--quiet=rules", *args, configfile=configfile)
    jobs, in_table = {}, False
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] != "total":
                jobs[parts[0]] = int(parts[1])
        elif in_table and parts and not set(parts[0]) <= {"-"}:
            in_table = False
    return jobs


@pytest.fixture
def root():
    return ROOT


@pytest.fixture(scope="session")
def test_config_run(tmp_path_factory):
    """One complete local run of config/test.yaml (``--cores 2``), shared by the workflow tests and
    the SLURM test (which compares its table and wall time with this run instead of redoing it).
    Returns (workdir, configfile, wall seconds).

    GEOVQ_TEST_RUN=<dir> (for development only) reuses a directory where `snakemake --configfile
    <dir>/config.yaml` with a copy of config/test.yaml has completed, instead of running it again."""
    reuse = os.environ.get("GEOVQ_TEST_RUN")
    if reuse:
        work = Path(reuse)
        return work, work / "config.yaml", float("nan")
    work = tmp_path_factory.mktemp("run_a")
    cfg = work / "config.yaml"
    cfg.write_text((ROOT / "config" / "test.yaml").read_text())
    t0 = time.monotonic()
    run_snakemake(work, configfile=cfg)
    return work, cfg, time.monotonic() - t0


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny models run faster and steadier that way)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def to_nx(G):
    """A symmetric scipy.sparse graph as a networkx.Graph with weights: the oracle's input."""
    import networkx as nx
    import scipy.sparse as sp

    H = nx.Graph()
    H.add_nodes_from(range(G.shape[0]))
    C = sp.triu(G, k=1).tocoo()
    H.add_weighted_edges_from(zip(C.row.tolist(), C.col.tolist(), C.data.tolist()))
    return H
