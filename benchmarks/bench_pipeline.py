"""Where a finished workflow run spent its time: job-seconds per rule and per seed, start-up, critical path, wall time.

Reads what every run leaves behind and prints figures; it asserts nothing:

- ``results/**/benchmarks/**/*.tsv``: Snakemake's benchmark of each job (its wall seconds ``s``, peak
  RSS); the job-seconds below are their sums, nothing else;
- ``results/**/logs/*.log``: the job's own log (geovq.stages.runner): its peak RSS (the
  benchmark's column measures only the waiting job process when the job was forked from the warm
  server, geovq.stages.warm), and the line ``start-up X s (...)``, how long the job's process ran
  before its stage was called
  (interpreter, Snakemake's script preamble, imports); logs of older runs have no such line, and
  then only a lower bound is known, the time before the runner opened its log (benchmark s minus
  the log's "done in");
- the Snakemake log of the run (``.snakemake/log/*.snakemake.log``, the newest unless ``--log``
  names one): each job's start and finish time and its inputs and outputs, from which the jobs'
  dependencies, the critical path (the longest chain of dependent jobs, by their benchmark
  seconds) and the wall time (first job's start to last job's finish) follow.

A job belongs to seed N when its outputs lie under ``.../seed{N}/``; per-dataset jobs (data,
classifier, the Fréchet reference) and the tables over all runs are "shared". "Per seed" is
given both ways: the total over the number of seeds (the shared jobs included, as issue 25
measured today's 1 744 job-s per seed) and the seeded jobs alone.

    .venv/bin/python benchmarks/bench_pipeline.py                 # the run in ./results
    .venv/bin/python benchmarks/bench_pipeline.py --workdir /tmp/run --json figures.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

SEED = re.compile(r"/seed(\d+)/")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")
STARTUP = re.compile(r"start-up ([0-9.]+) s")
RULE_OF_LOG = re.compile(r"start-up [0-9.]+ s \(rule (\w+)")
PEAK = re.compile(r"peak RSS ([0-9.]+) MB, CPU ([0-9.]+) s")
DONE = re.compile(r"done in ([0-9.]+)s")


@dataclass
class Job:
    rule: str
    jobid: int = -1
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    log: str | None = None
    benchmark: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    seconds: float | None = None  # the benchmark's wall seconds
    rss_mb: float | None = None
    cpu_s: float | None = None  # the stage's own CPU time (its log's last lines)
    startup: float | None = None
    startup_estimated: bool = False

    @property
    def seed(self):
        for path in self.outputs:
            m = SEED.search(path)
            if m:
                return int(m.group(1))
        return None


def parse_snakemake_log(path):
    """Jobs (by jobid) with their rule, files, start and finish times, from a Snakemake log."""
    jobs, stamp, cur = {}, None, None
    for line in Path(path).read_text().splitlines():
        m = STAMP.match(line.strip())
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            cur = None
            continue
        m = RULE.match(line.strip())
        if m:
            cur = Job(m.group(1), start=stamp)
            continue
        m = FINISHED.match(line.strip())
        if m and int(m.group(1)) in jobs:
            jobs[int(m.group(1))].end = stamp
            continue
        if cur is None or ":" not in line or not line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key == "jobid":
            cur.jobid = int(value)
            jobs[cur.jobid] = cur
        elif key in ("input", "output"):
            setattr(cur, key + "s", [v.strip() for v in value.split(",") if v.strip()])
        elif key in ("log", "benchmark"):
            setattr(cur, key, value.split(",")[0].strip())
    return jobs


def read_benchmark(path):
    """(wall seconds, peak RSS MB) of one Snakemake benchmark TSV."""
    header, row = Path(path).read_text().splitlines()[:2]
    rec = dict(zip(header.split("\t"), row.split("\t")))
    rss = rec.get("max_rss", "NA")
    return float(rec["s"]), (float(rss) if rss not in ("NA", "-") else None)


def read_usage(log_path):
    """(peak RSS MB, CPU s) the job's own log states (geovq.stages.runner), or (None, None)."""
    if not log_path or not Path(log_path).exists():
        return None, None
    m = PEAK.search(Path(log_path).read_text())
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def read_startup(log_path, seconds):
    """(start-up seconds, a lower bound only?) from a job log; None if the log is missing.

    Logs of older runs have no start-up line: then only the time before the runner opened its log
    (benchmark s - "done in" s) is known, a lower bound (the imports after it are not separable)."""
    if not log_path or not Path(log_path).exists():
        return None, False
    text = Path(log_path).read_text()
    m = STARTUP.search(text)
    if m:
        return float(m.group(1)), False
    done = DONE.search(text)
    if done and seconds is not None:
        return max(0.0, seconds - float(done.group(1))), True
    return None, False


def critical_path(jobs):
    """(seconds, [jobs]) of the longest chain of dependent jobs, weighted by benchmark seconds."""
    producer = {out: j for j in jobs for out in j.outputs}
    order = sorted(jobs, key=lambda j: (j.start or datetime.min, j.jobid))
    best = {}
    for j in order:  # a job starts after every job it depends on: start order is a topological order
        deps = {id(producer[i]): producer[i] for i in j.inputs if i in producer and producer[i] is not j}
        prev = max((best[k] for k in deps if k in best), key=lambda b: b[0], default=(0.0, []))
        best[id(j)] = (prev[0] + (j.seconds or 0.0), prev[1] + [j])
    return max(best.values(), key=lambda b: b[0], default=(0.0, []))


def jobs_from_files(workdir):
    """Jobs found from their benchmark files alone (a Snakemake log written with -q lists no jobs): the
    log beside each (.../benchmarks/x.tsv -> .../logs/x.log) names the rule; no times, no dependencies."""
    jobs = []
    for tsv in sorted(Path(workdir).glob("results/**/benchmarks/**/*.tsv")):
        log = Path(str(tsv).replace("/benchmarks/", "/logs/")).with_suffix(".log")
        m = RULE_OF_LOG.search(log.read_text()) if log.exists() else None
        rel = str(tsv.relative_to(workdir))
        jobs.append(Job(m.group(1) if m else tsv.stem, outputs=[rel], benchmark=rel, log=str(log.relative_to(workdir))))
    return jobs


def load_run(workdir, log=None):
    """Every job of the run in ``workdir`` with its benchmark, start-up and times."""
    workdir = Path(workdir)
    if log is None:
        logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
        if not logs:
            sys.exit(f"bench_pipeline: no Snakemake log in {workdir / '.snakemake' / 'log'}; name one with --log")
        log = logs[-1]
    jobs = [j for j in parse_snakemake_log(log).values() if j.rule != "all"]
    if not jobs:
        print(
            f"bench_pipeline: {log} lists no jobs (a -q run?): jobs from the benchmark files, no times or critical path"
        )
        jobs = jobs_from_files(workdir)
    for j in jobs:
        if j.benchmark and (workdir / j.benchmark).exists():
            j.seconds, j.rss_mb = read_benchmark(workdir / j.benchmark)
        log_path = workdir / j.log if j.log else None
        j.startup, j.startup_estimated = read_startup(log_path, j.seconds)
        rss, j.cpu_s = read_usage(log_path)
        if rss is not None:  # the job's own peak: a benchmark of a job forked from the warm server sees
            j.rss_mb = rss  # only the process that waited for it
    return jobs, Path(log)


def figures(jobs):
    """Every figure the report prints, as one dict."""
    timed = [j for j in jobs if j.seconds is not None]
    seeds = sorted({j.seed for j in jobs if j.seed is not None})
    total = sum(j.seconds for j in timed)
    by_rule = defaultdict(list)
    for j in timed:
        by_rule[j.rule].append(j)
    rules = []
    for rule, js in sorted(by_rule.items(), key=lambda kv: -sum(j.seconds for j in kv[1])):
        secs = [j.seconds for j in js]
        ups = [j.startup for j in js if j.startup is not None]
        rules.append(
            {
                "rule": rule,
                "jobs": len(js),
                "job_s": sum(secs),
                "median_s": statistics.median(secs),
                "max_s": max(secs),
                "startup_s": sum(ups) if ups else None,
                "cpu_s": sum(j.cpu_s for j in js if j.cpu_s is not None)
                if any(j.cpu_s is not None for j in js)
                else None,
                "peak_rss_mb": max((j.rss_mb for j in js if j.rss_mb is not None), default=None),
            }
        )
    per_seed = {s: sum(j.seconds for j in timed if j.seed == s) for s in seeds}
    shared = sum(j.seconds for j in timed if j.seed is None)
    ups = [j for j in timed if j.startup is not None]
    starts = [j.start for j in jobs if j.start]
    ends = [j.end for j in jobs if j.end]
    cp_s, cp = critical_path(timed)
    with_cpu = [j for j in timed if j.cpu_s is not None]
    return {
        "jobs": len(jobs),
        "jobs_without_benchmark": sorted({j.rule for j in jobs if j.seconds is None}),
        "job_s": total,
        "seeds": seeds,
        "job_s_per_seed_incl_shared": total / len(seeds) if seeds else None,
        "job_s_per_seed_seeded_only": {str(s): v for s, v in per_seed.items()},
        "job_s_shared": shared,
        "startup_s": sum(j.startup for j in ups),
        "startup_share": sum(j.startup for j in ups) / sum(j.seconds for j in ups) if ups else None,
        "startup_median_s": statistics.median(j.startup for j in ups) if ups else None,
        "startup_estimated": any(j.startup_estimated for j in ups),
        "cpu_s": sum(j.cpu_s for j in with_cpu),
        "cpu_jobs": len(with_cpu),
        "job_s_of_cpu_jobs": sum(j.seconds for j in with_cpu),
        "wall_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "critical_path_s": cp_s,
        "critical_path": [f"{j.rule} ({j.seconds:.0f} s)" for j in cp],
        "rules": rules,
    }


def report(f):
    lines = []
    wall = f["wall_s"]
    lines.append(
        f"{f['jobs']} jobs, {f['job_s']:.0f} job-s in all; wall time "
        + (f"{wall:.0f} s ({wall / 60:.1f} min)" if wall is not None else "unknown")
        + (f"; job-s / wall = {f['job_s'] / wall:.2f} (jobs running at once, on average)" if wall else "")
    )
    if f["seeds"]:
        per = f["job_s_per_seed_seeded_only"]
        lines.append(
            f"{len(f['seeds'])} seeds: {f['job_s_per_seed_incl_shared']:.0f} job-s per seed with the shared jobs "
            f"({f['job_s_shared']:.0f} job-s shared: data, classifier, tables); seeded jobs alone: "
            + ", ".join(f"seed {s} {v:.0f}" for s, v in per.items())
        )
    if f["startup_share"] is not None:
        est = (
            " (older logs have no start-up line: a lower bound, the time before the runner's log opened)"
            if f["startup_estimated"]
            else ""
        )
        lines.append(
            f"start-up (process start to the stage's call): {f['startup_s']:.0f} job-s, "
            f"{100 * f['startup_share']:.1f} % of the timed jobs' job-s; median {f['startup_median_s']:.2f} s a job{est}"
        )
    if f["cpu_jobs"]:
        lines.append(
            f"the stages' own CPU time (job logs, {f['cpu_jobs']} jobs): {f['cpu_s']:.0f} s against their "
            f"{f['job_s_of_cpu_jobs']:.0f} job-s ({f['job_s_of_cpu_jobs'] / max(f['cpu_s'], 1e-9):.2f}x): the rest is "
            "start-up and waiting (for a core: Snakemake's own work, other jobs; for files)"
        )
    lines.append(
        f"critical path {f['critical_path_s']:.0f} s over {len(f['critical_path'])} jobs: "
        + " -> ".join(f["critical_path"])
    )
    if f["jobs_without_benchmark"]:
        lines.append("rules without a benchmark TSV (not in the sums): " + ", ".join(f["jobs_without_benchmark"]))
    lines.append("")
    head = ["rule", "jobs", "job s (sum)", "median s", "slowest s", "start-up s", "stage CPU s", "peak RSS MB"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|" + "---:|" * (len(head) - 1))
    for r in f["rules"]:
        up = "–" if r["startup_s"] is None else f"{r['startup_s']:.0f}"
        rss = "–" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        cpu = "–" if r["cpu_s"] is None else f"{r['cpu_s']:.0f}"
        lines.append(
            f"| {r['rule']} | {r['jobs']} | {r['job_s']:.0f} | {r['median_s']:.1f} | {r['max_s']:.0f} | {up} | {cpu} | {rss} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=".", help="the directory Snakemake ran in (holds results/ and .snakemake/)")
    ap.add_argument("--log", default=None, help="the run's Snakemake log (default: the newest in .snakemake/log)")
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    jobs, log = load_run(args.workdir, args.log)
    f = figures(jobs)
    f["snakemake_log"] = str(log)
    print(f"bench_pipeline: {log}")
    print(report(f))
    if args.json:
        Path(args.json).write_text(json.dumps(f, indent=1, default=str))
    return f


if __name__ == "__main__":
    main()
