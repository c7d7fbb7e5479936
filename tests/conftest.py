"""Shared fixtures: repository paths and a runner for the Snakemake workflow in a temp dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def run_snakemake(workdir, *args, configfile=None, check=True, env=None):
    """Run the repository's Snakefile with ``workdir`` as working directory; return the process."""
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir, configfile):
    """{rule: count} of the jobs a dry run would execute."""
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", configfile=configfile)
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
