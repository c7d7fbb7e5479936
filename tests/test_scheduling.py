"""geovq.scheduling: Snakemake's re-evaluation timers, one pending per delay instead of one per round."""

import threading
import time

from geovq.scheduling import _schedule_once, patch_reevaluation_timers


class FakeScheduler:
    """What `_schedule_reevalutation` touches of Snakemake's JobScheduler."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def upstream(self, delay):
    """Snakemake 9.27's JobScheduler._schedule_reevalutation, as it is without the patch."""
    threading.Timer(delay, lambda: self._open_jobs.release()).start()


def rounds_in(schedule, seconds, finished_jobs, delay=0.02):
    """Scheduling rounds in `seconds` of JobScheduler.schedule's loop: every wake-up is a round that
    ends by asking for a re-evaluation; `finished_jobs` jobs finish (one wake-up each) at the start."""
    s = FakeScheduler()
    rounds = 0
    stop = time.monotonic() + seconds
    for _ in range(finished_jobs):
        s._open_jobs.release()
    while s._open_jobs.acquire(timeout=max(stop - time.monotonic(), 0)):
        if time.monotonic() >= stop:
            break
        rounds += 1
        schedule(s, delay)
    time.sleep(2 * delay)  # let the last timers fire before the next measurement
    return rounds


def test_patch_is_installed_on_the_snakemake_that_runs_the_workflow():
    # rules/common.smk applies it; if Snakemake renames or fixes the method this fails, to be revisited
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert patch_reevaluation_timers() is True
    assert JobScheduler._schedule_reevalutation is _schedule_once
    assert patch_reevaluation_timers() is True  # idempotent
    assert JobScheduler._schedule_reevalutation is _schedule_once


def test_many_requests_before_it_fires_wake_the_scheduler_once():
    s = FakeScheduler()
    before = set(threading.enumerate())
    for _ in range(50):
        _schedule_once(s, 0.05)
    new = [t for t in threading.enumerate() if t not in before]
    assert len(new) == 1 and isinstance(new[0], threading.Timer)  # one timer, not 50
    assert new[0].daemon  # exit does not wait for it
    assert not s._open_jobs.acquire(timeout=0.01)  # not before its delay
    assert s._open_jobs.acquire(timeout=1.0)
    assert not s._open_jobs.acquire(timeout=0.2)  # and only once


def test_the_round_it_wakes_can_schedule_the_next_one_and_delays_pend_separately():
    s = FakeScheduler()
    _schedule_once(s, 0.02)
    assert s._open_jobs.acquire(timeout=1.0)
    _schedule_once(s, 0.02)  # asked from the round that the first timer woke
    assert s._open_jobs.acquire(timeout=1.0)
    _schedule_once(s, 0.02)
    _schedule_once(s, 0.06)
    assert s._open_jobs.acquire(timeout=1.0) and s._open_jobs.acquire(timeout=1.0)


def test_rounds_no_longer_multiply_with_finished_jobs():
    # upstream: every finished job starts one more perpetual chain of timers, so the rounds per
    # second grow with the jobs that have finished; patched: about one round per delay
    slow = rounds_in(upstream, 0.5, finished_jobs=20)
    fast = rounds_in(_schedule_once, 0.5, finished_jobs=20)
    assert slow > 200  # ~21 chains x 25 rounds each
    assert fast < 20 + 2 * 25  # the 20 wake-ups of the finished jobs plus ~25 of the timer
    assert fast >= 20 + 10  # and it still wakes the scheduler after its delay
