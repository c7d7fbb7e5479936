"""A workaround for Snakemake's scheduler, applied by rules/common.smk: one pending re-evaluation
timer per delay instead of one more for every scheduling round.

Snakemake (9.27, the tested version) ends every scheduling round that had ready jobs with
`JobScheduler._schedule_reevalutation(timespan)`: a new non-daemon `threading.Timer` that wakes
the scheduler after the job-rate limiter's timespan (`--max-jobs-per-timespan`, default 100/1s).
Each wake-up is a round that starts another timer, and every finished job adds a round of its
own, so the timers multiply with the finished jobs: Snakemake had 138 threads 90 s into a rerun
of 204 jobs (7 at each of three looks during a default run with this patch), each timer waking
the scheduler once a second to stat the inputs of the ready jobs it considers; that was about two
thirds of Snakemake's CPU, taken from the two cores the jobs ran on (benchmarks/README.md).

With the patch a round still guarantees a wake-up within `delay` (the limiter's purpose: to submit
again once its window has passed), but a timer already pending for that delay serves every later
round until it fires, and the timers are daemon threads (exit does not wait for them). The jobs
run, and are chosen, as before; nothing a job computes depends on it.
"""

from __future__ import annotations

import threading


def _schedule_once(self, delay):
    """`JobScheduler._schedule_reevalutation`: release the scheduler once within `delay` seconds."""
    lock = self.__dict__.setdefault("_geovq_timer_lock", threading.Lock())
    pending = self.__dict__.setdefault("_geovq_pending", set())
    with lock:
        if delay in pending:
            return
        pending.add(delay)

    def fire():
        with lock:  # before the release: the round it wakes must be able to schedule the next one
            pending.discard(delay)
        self._open_jobs.release()

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()


def patch_reevaluation_timers():
    """Install `_schedule_once` on Snakemake's JobScheduler; True if it is (now or already) in place.

    False, changing nothing, when the running Snakemake has no such method (renamed or fixed)."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    method = getattr(JobScheduler, "_schedule_reevalutation", None)
    if method is None:
        return False
    if method is not _schedule_once:
        JobScheduler._schedule_reevalutation = _schedule_once
    return True
