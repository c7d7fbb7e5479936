"""The workflow on a real SLURM cluster through profiles/slurm (issue #5).

A module fixture starts a single-node SLURM on localhost with tests/slurm/start_local_slurm.sh
(munge, MariaDB + slurmdbd for accounting, slurmctld, slurmd with one count-only GPU), all under a
temp dir and on free ports, and stops it with tests/slurm/stop_local_slurm.sh even when a test
fails. The tests then check, from sacct and the job logs rather than from Snakemake's word:
- config/test.yaml through profiles/slurm (account, partition and CPU count set for this node,
  everything else as the file says): every job the dry run plans is a SLURM job that COMPLETED,
  with the memory, time limit, CPUs and GPUs that Snakemake planned for it (and that the profile
  and the rules set); wall time against a local `--cores 2` run is printed;
- a failing job fails the run with its SLURM job id in the message, after `retries` attempts that
  ask for more memory and time each;
- profiles/slurm-noacct runs, and fails, properly on a cluster without accounting;
- afterwards no daemon of ours is left running.
Needs root and Debian packages (installed with apt-get when missing); skipped otherwise, and then
.ci/run ends with a line "NOTE: SLURM tests did not run: <reason>".
Run: .venv/bin/python -m pytest tests/test_slurm.py -x -q
"""

import csv
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SNAKEMAKE

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HARNESS = ROOT / "tests" / "slurm"
FAILING = HARNESS / "failing" / "Snakefile"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
PROFILE_NOACCT = ROOT / "profiles" / "slurm-noacct" / "config.yaml"
TEST_CONFIG = ROOT / "config" / "test.yaml"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
DAEMONS = {"slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "slurmstepd", "slurmscriptd"}
SLURM_SEED = 0
SLURM_VARIANT = "spatial"  # the latent-grid variant: every job kind the vanilla one has, and more
SLURM_QUANTIZERS = ["kmeans", "riemannian", "vqvae"]
GPUS = 1  # count-only GPUs of the local node; the workflow run sets config gpu=1 to request them
NCPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
SACCT_FIELDS = "JobID,JobName,State,ReqMem,Timelimit,ReqCPUS,AllocCPUS,AllocTRES,ExitCode,Partition,Account"


def _skip_reason():
    if not sys.platform.startswith("linux"):
        return "needs Linux to start a local SLURM"
    if os.geteuid() != 0:
        return "needs root to start munged, slurmdbd, slurmctld and slurmd"
    if not shutil.which("dpkg"):
        return "needs a Debian-like system (dpkg + apt-get) for the SLURM packages"
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if missing and not shutil.which("apt-get"):
        return f"needs apt-get to install {' '.join(missing)}"
    return None


def _free_port_block(n=3):
    """A base port with n consecutive free TCP ports on all addresses (slurmctld, slurmd, slurmdbd)."""
    for _ in range(200):
        base = random.randint(20000, 32000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


def _proc_stat(pid):
    """(state, ppid, starttime) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class LocalSlurm:
    """The harness scripts, plus what the tests need: the client environment and our processes."""

    def __init__(self, base):
        self.base = Path(base)
        self.port = _free_port_block()
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.base / "etc" / "slurm.conf"),
            "PATH": f"{self.base / 'bin'}:{os.environ['PATH']}",  # the srun that keeps SLURM_CONF
        }
        self.seen = {}  # pid -> (starttime, comm): every daemon process this cluster had
        self.accounting = None

    def _script(self, name, *args, **env):
        return subprocess.run(
            ["bash", str(HARNESS / name), *args],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "GEOVQ_SLURM_PORT": str(self.port), "GEOVQ_SLURM_GPUS": str(GPUS), **env},
        )

    def start(self, accounting=True):
        proc = self._script("start_local_slurm.sh", str(self.base), SLURM_ACCOUNTING="1" if accounting else "0")
        self.record()
        assert proc.returncode == 0, f"start_local_slurm.sh failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
        self.accounting = accounting

    def stop(self, wipe=False):
        self.record()
        return self._script("stop_local_slurm.sh", *(["--wipe"] if wipe else []), str(self.base))

    def ours(self):
        """Live pids started for this cluster: marked in their environment, or children of those."""
        marker = f"GEOVQ_SLURM_DAEMON={self.base.resolve()}".encode()
        marked = set()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if marker in (d / "environ").read_bytes().split(b"\0"):
                        marked.add(int(d.name))
                except OSError:
                    pass
        table = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and (st := _proc_stat(d.name)):
                table[int(d.name)] = st
        grew = True
        while grew:
            grew = False
            for pid, (_, ppid, _) in table.items():
                if pid not in marked and ppid in marked:
                    marked.add(pid)
                    grew = True
        return {pid for pid in marked if pid in table and table[pid][0] != "Z"}

    def record(self):
        for pid in self.ours():
            if st := _proc_stat(pid):
                self.seen.setdefault(pid, (st[2], _comm(pid)))

    def still_running(self):
        """Seen daemons that are still the same live process (not a zombie, pid not reused)."""
        left = {}
        for pid, (start, comm) in self.seen.items():
            st = _proc_stat(pid)
            if st and st[2] == start and st[0] != "Z":
                left[pid] = comm
        for pid in self.ours():
            left.setdefault(pid, _comm(pid))
        return left

    def zombies(self):
        """Seen daemons that have exited but not been reaped yet: {pid: (comm, parent pid)}."""
        return {
            pid: (comm, st[1])
            for pid, (start, comm) in self.seen.items()
            if (st := _proc_stat(pid)) and st[2] == start and st[0] == "Z"
        }

    def run(self, *cmd, check=True):
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, check=check, timeout=120)


def _note_for_ci(line):
    """Tell .ci/run whether SLURM was exercised: it names a file in GEOVQ_SLURM_REPORT and prints a
    NOTE from it when these tests did not run (skipped, deselected, or never reached)."""
    if path := os.environ.get("GEOVQ_SLURM_REPORT"):
        Path(path).write_text(line + "\n")


@pytest.fixture(scope="module")
def cluster(request):
    reason = _skip_reason()
    if reason:
        _note_for_ci(f"skipped: {reason}")
        pytest.skip(f"real SLURM test skipped: {reason}")
    # not under pytest's tmp dirs: those are private to root, and munged/mariadbd run as their users
    c = LocalSlurm(tempfile.mkdtemp(prefix="geovq-slurm-"))
    failed_before = request.session.testsfailed

    def teardown():
        keep = request.session.testsfailed > failed_before  # keep the logs of a failed run
        proc = c.stop(wipe=not keep)
        left = c.still_running()
        if keep:
            print(f"\nlocal SLURM state and logs kept in {c.base}")
        assert proc.returncode == 0 and not left, (
            f"stop_local_slurm.sh left {left}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
        )

    request.addfinalizer(teardown)  # before start: a half-started cluster is stopped too
    c.start(accounting=True)
    _note_for_ci("ran: a local SLURM cluster started")
    return c


def cluster_profile(src, dest, account=None):
    """src adapted to the local cluster: its node has NCPUS CPUs (the profile asks for 8 per job),
    its partition is `debug`, jobs run under `account` if given, and the first status check comes
    after 2 s (not 40). Everything else (memory, time, retries, ...) as the file says."""
    prof = yaml.safe_load(Path(src).read_text())
    prof["cores"] = prof["max-threads"] = NCPUS
    prof["default-resources"] = {**prof["default-resources"], "slurm_partition": "debug"}
    if account:
        prof["default-resources"]["slurm_account"] = account
    prof["slurm-init-seconds-before-status-checks"] = 2
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return prof


def snakemake(workdir, profile_dir, *args, snakefile=ROOT / "Snakefile", env=None, timeout=4500):
    """Snakemake with one ordered output stream (stderr into stdout); returns (process, seconds)."""
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(profile_dir),
        *args,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=timeout)
    return proc, time.monotonic() - t0


def parse_jobs(text):
    """The job blocks Snakemake printed, in order: rule, local?, jobid, wildcards, threads, resources."""
    jobs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(local)?rule (\S+):$", line)
        if m:
            cur = {
                "local": bool(m[1]),
                "rule": m[2],
                "jobid": None,
                "wildcards": "",
                "threads": 1,
                "resources": {},
                "output": False,
            }
            jobs.append(cur)
        elif cur is not None and line.startswith("    "):
            if line.startswith("        "):  # a multi-line value (shell command)
                continue
            key, _, val = line.strip().partition(": ")
            if key == "jobid":
                cur["jobid"] = int(val)
            elif key == "wildcards":
                cur["wildcards"] = val
            elif key == "threads":
                cur["threads"] = int(val)
            elif key == "output":
                cur["output"] = True
            elif key == "resources":
                cur["resources"] = dict(kv.split("=", 1) for kv in val.split(", "))
        else:
            cur = None
    return jobs


SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", re.M)


def submissions(text):
    """[(job block as printed just before, SLURM job id, job log)] for every sbatch of the run."""
    out, latest = [], {}
    pos = 0
    for m in SUBMITTED.finditer(text):
        for job in parse_jobs(text[pos : m.start()]):
            if job["jobid"] is not None and not job["local"]:
                latest[job["jobid"]] = job
        pos = m.end()
        out.append((latest[int(m[1])], m[2], Path(m[3])))
    return out


def sacct(c, ids, wait=60):
    """sacct rows by job id, once none of them is pending or running any more."""
    deadline = time.monotonic() + wait
    while True:
        out = c.run("sacct", "-X", "-P", "-n", "-j", ",".join(ids), "-o", SACCT_FIELDS).stdout
        rows = {
            r["JobID"]: r
            for r in (dict(zip(SACCT_FIELDS.split(","), line.split("|"))) for line in out.splitlines() if line)
        }
        settled = all(i in rows and rows[i]["State"] not in ("PENDING", "RUNNING", "COMPLETING") for i in ids)
        if settled or time.monotonic() > deadline:
            return rows
        time.sleep(2)


def mem_mb(reqmem):
    """sacct ReqMem ('4000M', '4G', '100Mn' in older versions) in MB."""
    m = re.fullmatch(r"([\d.]+)([KMGT])[nc]?", reqmem)
    assert m, reqmem
    return round(float(m[1]) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[m[2]])


def minutes(timelimit):
    """sacct/squeue time limit ('01:00:00', '1-00:00:00', '30:00') in minutes."""
    days, _, hms = timelimit.rpartition("-")
    parts = [int(p) for p in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def gres_gpus(alloc_tres):
    m = re.search(r"gres/gpu=(\d+)", alloc_tres)
    return int(m[1]) if m else 0


def key(job):
    return job["rule"], job["wildcards"]


def planned_resources(job):
    r = job["resources"]
    return {
        "threads": job["threads"],
        "mem_mb": int(r["mem_mb"]),
        "runtime": int(r["runtime"]),
        "gpu": int(r.get("gpu", 0)),
    }


FAKE_MAKE = """#!/bin/bash
[ "$*" = test ] || { echo "fake make: expected 'make test', got 'make $*'"; exit 99; }
if [ -n "$FAKE_REPORT" ]; then echo "$FAKE_REPORT" > "$GEOVQ_SLURM_REPORT"; fi
exit "$FAKE_RC"
"""


@pytest.mark.parametrize(
    "report,rc,note",
    [
        ("skipped: needs root to start munged", 0, "NOTE: SLURM tests did not run: needs root to start munged"),
        ("", 0, "NOTE: SLURM tests did not run: tests/test_slurm.py never reached its cluster"),
        ("skipped: needs apt-get to install slurmd", 3, "NOTE: SLURM tests did not run: needs apt-get"),
        ("ran: a local SLURM cluster started", 2, "SLURM tests ran"),
    ],
    ids=["skipped", "never-reached", "skipped-and-failed", "ran-and-failed"],
)
def test_ci_says_loudly_when_slurm_did_not_run(tmp_path, report, rc, note):
    """.ci/run runs `make test` (here a stand-in that writes what the cluster fixture would), keeps its
    exit status, and says whether the SLURM tests ran."""
    (tmp_path / "make").write_text(FAKE_MAKE)
    (tmp_path / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_REPORT": report, "FAKE_RC": str(rc)}
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and lines[-1].startswith(note), proc.stdout
    assert ("NOTE:" in proc.stdout) == (not report.startswith("ran"))


def test_skipped_cluster_fixture_leaves_its_reason_for_ci(tmp_path):
    """Where the cluster cannot start (here: os.geteuid patched to a user's), the fixture writes the
    skip reason to GEOVQ_SLURM_REPORT (and starts nothing)."""
    (tmp_path / "not_root.py").write_text("import os\nos.geteuid = lambda: 1000\n")
    report = tmp_path / "report"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "GEOVQ_SLURM_REPORT": str(report),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "not_root",
            "-p",
            "no:cacheprovider",
            "-q",
            "-o",
            "addopts=-rs",
            "--basetemp",
            str(tmp_path / "run"),
            f"{Path(__file__)}::test_daemons_stopped",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout + proc.stderr
    assert report.read_text() == "skipped: needs root to start munged, slurmdbd, slurmctld and slurmd\n"


def test_profiles_differ_only_by_accounting_keys():
    """profiles/slurm-noacct is profiles/slurm plus its two keys, nothing else."""
    full = yaml.safe_load(PROFILE.read_text())
    noacct = yaml.safe_load(PROFILE_NOACCT.read_text())
    assert full["executor"] == "slurm" and "slurm-status-command" not in full
    assert noacct == {**full, "slurm-status-command": "squeue", "slurm-no-account": True}


@pytest.mark.timeout(5400)
def test_workflow_runs_as_real_slurm_jobs(cluster, test_config_run, tmp_path, capsys):
    """Every planned job is a COMPLETED SLURM job with the planned memory, time, CPUs and GPUs."""
    prof_dir = tmp_path / "profile"
    cluster_profile(PROFILE, prof_dir, account="root")
    # one seed, one variant and three quantizers (every kind of job, about 27 of them): the executor
    # is under test here, not the study, and every job costs SLURM's start-up overhead
    cfg = [
        "--configfile",
        str(TEST_CONFIG),
        "--config",
        f"gpu={GPUS}",
        f"seeds=[{SLURM_SEED}]",
        f"variants=[{SLURM_VARIANT}]",
        f"quantizers=[{','.join(SLURM_QUANTIZERS)}]",
        # config/test.yaml computes on one thread; two CPUs for these rules' jobs (scheduling only:
        # they still compute with config `threads`, so the rows stay the local run's), so that the
        # CPUs SLURM grants are seen to follow each job's threads
        "--set-threads",
        "train_vae=2",
        "train_vqvae=2",
    ]

    # what Snakemake plans, with the same profile and config: the expectations
    dry, _ = snakemake(tmp_path / "dry", prof_dir, *cfg, "-n", env=cluster.env, timeout=600)
    assert dry.returncode == 0, dry.stdout[-6000:]
    planned = {key(j): j for j in parse_jobs(dry.stdout)}
    assert planned, dry.stdout[-3000:]

    # the same config run locally (--cores 2, conftest's shared run), for the overhead
    local_dir, _, local_s = test_config_run

    start = time.strftime("%Y-%m-%dT%H:%M:%S")
    proc, slurm_s = snakemake(tmp_path / "slurm", prof_dir, *cfg, env=cluster.env)
    log = proc.stdout
    assert proc.returncode == 0, log[-8000:]
    with capsys.disabled():
        print(
            f"\n[test_slurm] config/test.yaml, {len(planned)} jobs: local --cores 2 {local_s:.0f} s, "
            f"through SLURM {slurm_s:.0f} s (x{slurm_s / local_s:.2f}, +{slurm_s - local_s:.0f} s)"
        )

    subs = submissions(log)
    ran_locally = [j for j in parse_jobs(log) if j["local"]]
    # every planned job ran exactly once: on SLURM, or locally only if it has nothing to make
    assert sorted([key(j) for j, _, _ in subs] + [key(j) for j in ran_locally]) == sorted(planned), log[-4000:]
    assert all(not planned[key(j)]["output"] for j in ran_locally), "a rule with outputs ran outside SLURM"
    assert subs, "nothing was submitted"

    run_id = re.search(r"^SLURM run ID: (\S+)$", log, re.M)[1]
    ids = [sid for _, sid, _ in subs]
    rows = sacct(cluster, ids)
    # and nothing else was submitted under this run's name
    named = cluster.run("sacct", "-X", "-P", "-n", "-S", start, "--name", run_id, "-o", "JobID").stdout.split()
    assert sorted(named, key=int) == sorted(ids, key=int)

    bad = []
    for job, sid, job_log in subs:
        want = planned_resources(planned[key(job)])
        assert planned_resources(job) == want, (key(job), planned_resources(job), want)
        row = rows.get(sid)
        if row is None:
            bad.append((sid, key(job), "no sacct record"))
            continue
        got = {
            "threads": int(row["ReqCPUS"]),
            "mem_mb": mem_mb(row["ReqMem"]),
            "runtime": minutes(row["Timelimit"]),
            "gpu": gres_gpus(row["AllocTRES"]),
        }
        if row["State"] != "COMPLETED" or got != want or int(row["AllocCPUS"]) != want["threads"]:
            bad.append((sid, key(job), row, want))
        text = job_log.read_text() if job_log.exists() else ""
        if f"rule {job['rule']}:" not in text or "1 of 1 steps (100%) done" not in text:
            bad.append((sid, key(job), f"job log {job_log} does not show the job done"))
        if row["Partition"] != "debug" or row["Account"] != "root":
            bad.append((sid, key(job), row["Partition"], row["Account"]))
    assert not bad, "\n".join(map(str, bad))

    # resources really come from the rules and the profile: some jobs differ, and CPU-only jobs
    # ask for no GPU while the ones whose rules ask for config gpu get one
    wants = [planned_resources(planned[key(j)]) for j, _, _ in subs]
    assert len({w["mem_mb"] for w in wants}) > 1 and len({w["threads"] for w in wants}) > 1
    assert any(w["gpu"] == GPUS for w in wants) and any(w["gpu"] == 0 for w in wants)

    # the same numbers as the local run's rows of that seed and those quantizers: jobs compute with
    # config `threads` whatever CPUs SLURM grants, so on one machine they are identical
    def table(workdir):
        with open(workdir / "results" / "tables" / "metrics.csv") as f:
            rows = [
                r
                for r in csv.DictReader(f)
                if (r["seed"], r["variant"]) == (str(SLURM_SEED), SLURM_VARIANT) and r["quantizer"] in SLURM_QUANTIZERS
            ]
        return sorted(rows, key=lambda r: (r["dataset"], r["variant"], r["quantizer"], r["assign"]))

    slurm_rows, local_rows = table(tmp_path / "slurm"), table(local_dir)
    import geovq.quantizers as Q
    from geovq.config import validate

    decode = validate(yaml.safe_load((ROOT / "config" / "test.yaml").read_text()))["assignment"]["decode"]
    assert len(slurm_rows) == len(Q.evaluations(SLURM_QUANTIZERS, decode))  # every rule each quantizer is scored by
    assert slurm_rows == local_rows


def test_failing_job_fails_run_with_slurm_job_id(cluster, tmp_path):
    """A job that exits 3: retried with more memory and time, then the run fails naming its job ids."""
    prof = cluster_profile(PROFILE, tmp_path / "profile", account="root")
    proc, _ = snakemake(tmp_path / "work", tmp_path / "profile", snakefile=FAILING, env=cluster.env, timeout=900)
    log = proc.stdout
    assert proc.returncode != 0, log[-4000:]
    assert not (tmp_path / "work" / "done.txt").exists()

    subs = submissions(log)
    attempts = prof["retries"] + 1
    assert [j["rule"] for j, _, _ in subs] == ["maybe_fail"] * attempts, log[-4000:]
    ids = [sid for _, sid, _ in subs]
    for sid in ids:
        assert f"SLURM-job '{sid}' failed" in log and f"external_jobid: {sid}" in log, (sid, log[-4000:])
    rows = sacct(cluster, ids)
    runtime_expr = prof["default-resources"]["runtime"]  # the rule sets no runtime: the profile's
    for attempt, (sid, (_, _, job_log)) in enumerate(zip(ids, subs), start=1):
        row = rows[sid]
        assert row["State"] == "FAILED", row
        assert mem_mb(row["ReqMem"]) == 100 * attempt, row  # the rule's lambda wildcards, attempt
        assert minutes(row["Timelimit"]) == eval(runtime_expr, {}, {"attempt": attempt}), row
        assert "failing on purpose" in job_log.read_text()


def test_noacct_profile_on_cluster_without_accounting(cluster, tmp_path):
    """profiles/slurm-noacct: squeue for states, no -A; a success and a failure are both seen."""
    cluster.start(accounting=False)  # same state dir: slurmctld restarts without slurmdbd
    nosacct = cluster.run("sacct", "-n", "-X", "-j", "1", check=False)
    assert nosacct.returncode != 0 or not nosacct.stdout.strip(), nosacct

    cluster_profile(PROFILE_NOACCT, tmp_path / "profile")
    results = {}
    for fail in (False, True):
        work = tmp_path / f"fail_{fail}"
        proc, _ = snakemake(
            work,
            tmp_path / "profile",
            "--config",
            f"fail={fail}",
            "--retries",
            "0",
            snakefile=FAILING,
            env=cluster.env,
            timeout=600,
        )
        ((job, sid, job_log),) = submissions(proc.stdout)
        q = cluster.run("squeue", "-h", "-t", "all", "-j", sid, "-o", "%T|%m|%l|%C|%a").stdout.strip()
        results[fail] = proc, sid, q.split("|"), job_log, work
    proc, sid, (state, mem, limit, cpus, account), _, work = results[False]
    assert proc.returncode == 0 and (work / "done.txt").exists(), proc.stdout[-4000:]
    assert state == "COMPLETED" and mem_mb(mem) == 100 and int(cpus) == 1, (state, mem, cpus)
    assert account in ("", "(null)"), account
    proc, sid, (state, *_), job_log, _ = results[True]
    assert proc.returncode != 0 and state == "FAILED"
    assert f"SLURM-job '{sid}' failed" in proc.stdout, proc.stdout[-4000:]
    assert "failing on purpose" in job_log.read_text()


def test_daemons_stopped(cluster):
    """stop_local_slurm.sh leaves no slurmctld/slurmd/slurmdbd/munged/mariadbd of ours running."""
    assert {comm for _, comm in cluster.seen.values()} >= {"slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd"}
    proc = cluster.stop()
    assert proc.returncode == 0, proc.stderr
    assert not cluster.still_running(), cluster.still_running()
    # exited daemons were reparented to PID 1, which reaps them; give it a moment, then report
    deadline = time.monotonic() + 30
    while cluster.zombies() and time.monotonic() < deadline:
        time.sleep(1)
    live = {pid: comm for pid, comm in cluster.still_running().items() if comm in DAEMONS}
    assert not live, live
    if z := cluster.zombies():
        print(f"exited daemons not yet reaped by their parent (zombies, not running): {z}")
