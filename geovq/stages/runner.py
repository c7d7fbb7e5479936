"""Running one stage as a Snakemake ``script:`` job (workflow_scripts/run_stage.py calls `entry`).

Stages take ``inp``/``out``/``params`` objects with attribute access (Snakemake's, or SimpleNamespace
in tests) and a `Log`; they read their inputs, call the library and write their outputs atomically.
A stage's ``params`` hold the job's wildcards (``dataset``, ``variant``, ``seed`` as an int, ...)
and the rule's ``params:``, so rules do not restate their wildcards as params.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from types import SimpleNamespace

from geovq.io import GeovqError


class Log:
    """Timestamped lines to the rule's log file (flushed, so `tail -f` shows progress)."""

    def __init__(self, path=None):
        self.f = open(path, "w") if path else None
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        line = f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - self.t0:7.1f}s] {msg}"
        print(line, file=self.f or sys.stderr, flush=True)


def run_rule(smk, started=None):
    """Run the stage geovq/stages/registry.py names for the job's rule (``smk``: Snakemake's job
    object). ``started``: when the job's process started (default: this process's start)."""
    import importlib

    from geovq.stages.registry import STAGES

    if smk.rule not in STAGES:
        sys.exit(f"geovq error: rule {smk.rule!r} has no stage in geovq/stages/registry.py")
    module, _, name = STAGES[smk.rule].partition(":")
    entry(smk, getattr(importlib.import_module(module), name), started=started)


def entry(smk, stage, started=None):
    """Run ``stage`` for a Snakemake ``script:`` job: log to the rule's log, one-line errors.

    The log's first line says how long the job's process ran before the stage was called (start-up:
    the interpreter, Snakemake's script preamble and the imports; ``started`` is that process's
    start, default this one's), its last lines the geovq modules loaded, peak RSS and CPU time."""
    import resource

    from geovq.stages.warm import process_start

    started = process_start() if started is None else started
    log_path = smk.log[0] if len(smk.log) else None
    log = Log(log_path)
    if started is not None:
        how = "forked from a warm server" if os.environ.get("GEOVQ_WARM_FORKED") else "a process of its own"
        log(f"start-up {time.time() - started:.2f} s (rule {smk.rule}, {how}: process start to the stage's call)")
    # the config's thread count, not the cores Snakemake granted: results must not depend on --cores
    _set_threads(smk.config["threads"])
    stderr = sys.stderr
    try:
        redirect = open(log_path, "a") if log_path else contextlib.nullcontext(sys.stderr)
        with redirect as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            stage(smk.input, smk.output, stage_params(smk), log)
        log("geovq modules: " + " ".join(sorted(m for m in sys.modules if m == "geovq" or m.startswith("geovq."))))
        use = resource.getrusage(resource.RUSAGE_SELF)
        log(f"peak RSS {use.ru_maxrss / 1024:.0f} MB, CPU {use.ru_utime + use.ru_stime:.1f} s")
        log(f"done in {time.perf_counter() - log.t0:.1f}s")
    except (GeovqError, ValueError) as e:
        msg = f"geovq error in rule {smk.rule}: {e}".splitlines()[0]
        log(msg)
        if log.f:
            traceback.print_exc(file=log.f)
        print(msg, file=stderr, flush=True)
        sys.exit(1)


def _items(named):
    return dict(named.items()) if hasattr(named, "items") else dict(vars(named))


def stage_params(smk):
    """The job's wildcards (``seed`` as an int) and the rule's params, as one namespace."""
    wildcards = _items(smk.wildcards) if hasattr(smk, "wildcards") else {}
    if "seed" in wildcards:
        wildcards["seed"] = int(wildcards["seed"])
    params = _items(smk.params)
    clash = sorted(k for k in set(wildcards) & set(params) if wildcards[k] != params[k])
    if clash:
        raise GeovqError(f"rule {smk.rule}: params {clash} differ from the wildcards of the same name")
    return SimpleNamespace(**{**wildcards, **params})


def _set_threads(n):
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def device_of(params):
    """The torch device of config key ``device`` (``params.device``: auto, cpu, cuda, ...)."""
    from geovq.device import resolve_device

    return resolve_device(params.device)


def log_result(log, result):
    """A stage's result dict as one log line."""
    log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
