"""CI fails on lint and format findings: `snakemake --lint` and `snakefmt --check` on the workflow,
ruff's pyflakes rules and `ruff format --check` on the Python (settings in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SNAKEMAKE


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--lint", "--configfile", str(ROOT / "config" / "test.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, out[-3000:]


PYTHON = ["geovq", "tests", "benchmarks", "workflow_scripts"]


def tool(name, *args):
    proc = subprocess.run([str(Path(sys.executable).with_name(name)), *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, f"{name} {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def test_ruff_finds_nothing():
    tool("ruff", "check", *PYTHON)


def test_python_is_formatted():
    tool("ruff", "format", "--check", *PYTHON)


def test_workflow_is_formatted():
    tool("snakefmt", "--check", "Snakefile", "rules")
