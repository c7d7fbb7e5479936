"""CI fails on lint findings: `snakemake --lint` on the workflow and ruff's pyflakes rules on the Python."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SNAKEMAKE


def test_snakemake_lint_is_clean():
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--lint", "--configfile",
                           str(ROOT / "config" / "test.yaml")], capture_output=True, text=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, out[-3000:]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "geovq", "tests", "benchmarks", "workflow_scripts"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
