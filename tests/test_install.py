"""What the install promises, checked without installing anything or reaching a network:
pyproject.toml's ranges take the versions a GPU box ran the default config with (so `pip install -e .`
keeps a user's torch), constraints/tested.txt pins every direct dependency inside those ranges, and
the Makefile's install (what `make test`, hence CI, runs) uses those pins."""

import re
import shutil
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

CONSTRAINTS = "constraints/tested.txt"

# Ran the whole default config end to end (README: The two commands).
GPU_BOX = {
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "numpy": "2.5.2",
    "scipy": "1.18.1",
    "pandas": "3.0.6",
    "faiss-cpu": "1.15.1",
}
GPU_BOX_PYTHON = "3.12"

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(specs):
    reqs = [Requirement(s) for s in specs]
    return {canonicalize_name(r.name): r for r in reqs}


RUNTIME = requirements(PROJECT["dependencies"])
DIRECT = {**RUNTIME, **requirements(PROJECT["optional-dependencies"]["test"])}


def pins():
    out = {}
    for line in (ROOT / CONSTRAINTS).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{CONSTRAINTS}: {line} is not an exact pin"
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


@pytest.mark.parametrize("name,version", sorted(GPU_BOX.items()))
def test_ranges_take_the_gpu_box_versions(name, version):
    assert version in RUNTIME[name].specifier, f"{name} {version} is outside pyproject.toml's {RUNTIME[name]}"


def test_requires_python_takes_the_gpu_box_python():
    assert SpecifierSet(PROJECT["requires-python"]).contains(GPU_BOX_PYTHON)


def test_every_dependency_is_a_range_with_an_upper_bound():
    """No exact pins in the package (they replace a user's torch); no open top (a next major may break)."""
    for name, req in DIRECT.items():
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops and "<" in ops and "==" not in ops, f"{req}: want >=known,<next-major"


def test_tested_pins_cover_every_direct_dependency_within_its_range():
    tested = pins()
    assert set(tested) == set(DIRECT), (
        f"unpinned: {sorted(set(DIRECT) - set(tested))}; not a dependency: {sorted(set(tested) - set(DIRECT))}"
    )
    for name, version in tested.items():
        assert version in DIRECT[name].specifier, f"{CONSTRAINTS} pins {name}=={version}, outside {DIRECT[name]}"


def test_conda_env_mirrors_the_runtime_ranges():
    """envs/geovq.yaml (snakemake --sdm conda) holds every runtime dependency that jobs import."""
    text = (ROOT / "envs" / "geovq.yaml").read_text()
    specs = re.findall(r"^\s*- ([A-Za-z][\w.-]*[<>=][^\s#]*)", text, flags=re.M)
    conda = requirements(s for s in specs if not s.startswith("python="))
    jobs_need = {n for n in RUNTIME if not n.startswith("snakemake")}
    assert set(conda) == jobs_need, (
        f"missing: {sorted(jobs_need - set(conda))}; extra: {sorted(set(conda) - jobs_need)}"
    )
    for name, req in conda.items():
        assert req.specifier == RUNTIME[name].specifier, f"envs/geovq.yaml {req} != pyproject.toml {RUNTIME[name]}"


def make_n(tmp_path, *args):
    if not shutil.which("make"):
        pytest.skip("no make")
    proc = subprocess.run(
        ["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "pip install" in line and " -e " in line]


def test_make_installs_the_tested_pins(tmp_path):
    (line,) = make_n(tmp_path)
    assert f"-c {CONSTRAINTS} " in line, line


def test_make_without_constraints_keeps_the_installed_torch(tmp_path):
    (line,) = make_n(tmp_path, "CONSTRAINTS=")
    assert f"-c {tmp_path / 'venv' / '.keep-torch.txt'} " in line, line
