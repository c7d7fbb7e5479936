"""The warm server (geovq.stages.warm): a job handed to it runs in a forked child as it would in its
own process: the job's own checkout, working directory, environment, output streams and exit status;
a failing job fails with its message; a killed job process takes its child with it.

A fake checkout written here (its own geovq package: the real warm module, a registry and a runner
that records what the child saw) keeps these tests independent of the pipeline's stages; that the
real stages give the same results with and without the server is tests/test_reproducibility.py's
(a run with GEOVQ_WARM=0 compared byte for byte with one through the server).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT

RUNNER = """
import json, os, sys, time


def run_rule(smk, started=None):
    import geovq

    record = {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "env": os.environ.get("GEOVQ_TEST_MARK"),
        "geovq": geovq.__file__,
        "torch_preloaded": "torch" in sys.modules,
        "started": started,
        "rule": smk.rule,
    }
    with open(smk.output[0], "w") as f:
        json.dump(record, f)
    print("stdout of the job", flush=True)
    if smk.rule == "fail":
        sys.exit("geovq error in rule fail: the one line")
    if smk.rule == "sleep":
        time.sleep(60)
"""

CLIENT = """
import sys
from types import SimpleNamespace

sys.path.insert(0, {root!r})
from geovq.stages.warm import delegate

smk = SimpleNamespace(rule=sys.argv[1], output=[sys.argv[2]])
if smk.rule == "unpicklable":
    smk.params = lambda: None  # a job object pickle cannot send
status = delegate(smk, {root!r})
print("status", status, flush=True)
sys.exit(0 if status is None else status)
"""


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A fake checkout with the real warm module; its own socket directory and a short idle time."""
    root = tmp_path / "checkout"
    (root / "geovq" / "stages").mkdir(parents=True)
    (root / "geovq" / "__init__.py").write_text("")
    (root / "geovq" / "stages" / "__init__.py").write_text("")
    shutil.copy(ROOT / "geovq" / "stages" / "warm.py", root / "geovq" / "stages" / "warm.py")
    (root / "geovq" / "stages" / "runner.py").write_text(textwrap.dedent(RUNNER))
    (root / "client.py").write_text(CLIENT.format(root=str(root)))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "GEOVQ_WARM_IDLE": "3", "GEOVQ_TEST_MARK": "job-env"}
    env.pop("SLURM_JOB_ID", None)
    env.pop("GEOVQ_WARM", None)
    yield root, env
    for sock in runtime.rglob("*.sock"):  # let the server go: it exits once idle
        sock.unlink(missing_ok=True)


def client(root, env, rule, out, cwd, **kw):
    return subprocess.Popen(
        [sys.executable, str(root / "client.py"), rule, str(out)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_a_job_runs_in_a_warm_child_of_its_own_checkout(checkout, tmp_path):
    root, env = checkout
    work = tmp_path / "work"
    work.mkdir()
    runs = []
    for i in range(2):  # the first starts the server, the second finds it
        proc = client(root, env, "ok", work / f"out{i}.json", work)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "status 0" in out and "stdout of the job" in out, (out, err)
        runs.append(json.loads((work / f"out{i}.json").read_text()))
    for rec in runs:
        assert rec["cwd"] == str(work) and rec["env"] == "job-env"
        assert rec["geovq"] == str(root / "geovq" / "__init__.py")  # imported afresh from the job's checkout
        assert rec["torch_preloaded"]  # the server's imports, inherited
        assert rec["started"] is not None and rec["started"] <= time.time()
    assert runs[0]["pid"] != runs[1]["pid"]  # one child per job
    socks = list(Path(env["XDG_RUNTIME_DIR"]).rglob("*.sock"))
    assert len(socks) == 1 and oct(socks[0].stat().st_mode & 0o777) == "0o600"


def test_a_failing_job_fails_with_its_message(checkout, tmp_path):
    root, env = checkout
    proc = client(root, env, "fail", tmp_path / "out.json", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "status 1" in out
    assert "geovq error in rule fail: the one line" in err


def test_killing_the_job_process_kills_its_child(checkout, tmp_path):
    root, env = checkout
    out = tmp_path / "out.json"
    proc = client(root, env, "sleep", out, tmp_path, start_new_session=True)
    deadline = time.monotonic() + 120
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    child = json.loads(out.read_text())["pid"]
    os.killpg(proc.pid, signal.SIGKILL)  # as Snakemake's process group is killed
    proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the child outlived its job process"
        time.sleep(0.05)


def test_switched_off_and_under_slurm_the_job_runs_itself(checkout, tmp_path):
    root, env = checkout
    for extra in ({"GEOVQ_WARM": "0"}, {"SLURM_JOB_ID": "42"}):
        proc = client(root, {**env, **extra}, "ok", tmp_path / "out.json", tmp_path)
        out, _ = proc.communicate(timeout=60)
        assert "status None" in out and not (tmp_path / "out.json").exists()
    assert not list(Path(env["XDG_RUNTIME_DIR"]).rglob("*.sock"))


def test_a_job_that_does_not_pickle_runs_itself_and_starts_no_server(checkout, tmp_path):
    """Pickled before any connection: no server (nor a child forked for a request that never
    comes) is started for it; the caller runs the job itself."""
    root, env = checkout
    proc = client(root, env, "unpicklable", tmp_path / "out.json", tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "status None" in out, err
    assert not (tmp_path / "out.json").exists()
    assert not list(Path(env["XDG_RUNTIME_DIR"]).rglob("*.sock"))


def test_process_start_is_the_moment_the_process_started():
    """The start-up every job log states is time.time() minus this: it must be the start to a clock
    tick (10 ms), not to /proc/stat's whole-second boot time (which read up to 1 s early and made
    bench_pipeline's start-ups longer than the jobs they are part of)."""
    from geovq.stages.warm import process_start

    tick = 1 / os.sysconf("SC_CLK_TCK")
    for _ in range(3):
        before = time.time()
        proc = subprocess.Popen(["sleep", "5"])
        after = time.time()
        try:
            start = process_start(proc.pid)
        finally:
            proc.kill()
            proc.wait()
        assert before - 2 * tick <= start <= after + 2 * tick
    assert process_start(2**22 + 12345) is None  # no such process
