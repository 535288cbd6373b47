"""The watchdog: one thread per worker process that keeps running jobs' leases and stops the
handlers that must stop, from outside them.

For each job the process runs, the thread
- renews its lease, never past the attempt's deadline plus JOB_HARD_TIMEOUT_GRACE, so that the
  reaper reaps a job whose worker is stuck or gone;
- once the handler has run CHECK_INTERVAL_SECONDS, checks that often whether the job is still
  this claim's (not cancelled, handed back or reaped), with one query per round for all
  the process's jobs (a progress write that just confirmed the claim saves one), and watches
  the attempt's deadline;
- tells a handler whose job must stop to stop: it sends the main thread a signal, which raises
  JobInterrupted (or SoftTimeLimitExceeded at the deadline, as Celery's soft limit would)
  wherever the handler is, whether or not it ever reports progress. If the handler still
  runs STOP_GRACE_SECONDS later (it caught the exception, or waits in C code that releases
  the GIL but ignores signals), the thread records how the attempt ended, with writes fenced
  by its claim, and ends the process, which Celery's prefork pool replaces.

C code that holds the GIL and never looks at signals (a huge sort, arithmetic on huge
integers) stops this thread too, until it returns; there the pool's parent process ends the
job's process at Celery's hard time limit, JOB_HARD_TIMEOUT_GRACE after the deadline, and the
reaper records the attempt once its lease has lapsed.

Quick jobs end before their first check and cost no query. One thread serves every job the
process runs: starting and joining a thread per job cost more than running a short job (about
5 ms of a 16 ms job_run, measured with cProfile).
"""

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connections
from django.utils import timezone

from jobs.handlers.base import JobInterrupted
from jobs.models import Job
from jobs.services import transitions
from jobs.services.common import attempt_deadline, log_fields

logger = logging.getLogger(__name__)

# How often a running job's claim is checked, and its deadline, once its handler has run as
# long. Also the longest the thread sleeps.
CHECK_INTERVAL_SECONDS = 0.25
# How long a handler told to stop has before its process is ended.
STOP_GRACE_SECONDS = 0.5
# CPU time between two ticks of the signal while a handler runs in the main thread. C code
# that holds the GIL for long (a regular expression backtracking, say) would otherwise starve
# this thread: a background thread ran once in 5 s beside such a regex. The regex engine runs
# signal handlers as it goes, and the tick's handler lets this thread have the GIL, once per
# tick: a query takes a few. A tick costs the handler about a microsecond.
TICK_SECONDS = 0.02
# The signal that interrupts a handler and ticks. No other part of a worker uses it; billiard
# only makes it end a pool process.
STOP_SIGNAL = signal.SIGPROF

Stop = type[JobInterrupted] | type[SoftTimeLimitExceeded]


def renewal_interval() -> float:
    return min(settings.JOB_LEASE.total_seconds() / 3, 10.0)


class LeaseKeeper:
    """Hold a job's lease while the `with` block runs, and stop its handler when it must stop.

    `abandon(stop)` records how the attempt ended when the handler would not stop and its
    process is about to end; it runs in the watchdog thread.
    """

    def __init__(self, job: Job, *, abandon: Callable[[Stop], None] | None = None) -> None:
        self.job = job
        self.abandon = abandon
        self.stop: Stop | None = None  # What the handler was told to raise.
        self.stopped_at = math.inf
        self.signalled = False  # The signal raised `stop` in the handler (it does so once).
        self.running = False  # The handler runs, in the main thread if `interruptible`.
        self.interruptible = False
        self.in_shield = False  # The signal's exception waits till the block is done.
        now = time.monotonic()
        # The first renewal is one interval after the claim, which set a full lease.
        self.renew_due = now + renewal_interval()
        self.check_due = now + CHECK_INTERVAL_SECONDS
        self.deadline = now + (attempt_deadline(job) - timezone.now()).total_seconds()

    def __enter__(self) -> "LeaseKeeper":
        _watchdog().hold(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _watchdog().release(self)

    def renew(self) -> bool:
        """Extend the lease once; False if the job is no longer held by this claim."""
        now = timezone.now()
        grace = settings.JOB_HARD_TIMEOUT_GRACE
        expires = min(now + settings.JOB_LEASE, attempt_deadline(self.job) + grace)
        return bool(transitions.apply(transitions.RENEW, self.job, lease_expires_at=expires))

    @contextlib.contextmanager
    def handler_running(self) -> Iterator[None]:
        """Run the block as the handler; in the main thread, the watchdog can interrupt it.

        Elsewhere (a test's thread, Celery's thread pool) no signal reaches it: the handler
        learns that it must stop at its next progress report.
        """
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            _start_interrupting(self)
        self.interruptible = in_main_thread
        self.running = True
        try:
            yield
        finally:
            # First, before anything that could run the signal's handler again: from here on
            # it raises nothing, and the watchdog neither signals nor ends the process.
            self.running = False
            if in_main_thread:
                _stop_interrupting()

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Hold the signal's exception back while the block runs, then raise it if it came.

        The block is the handler's progress write: an exception raised in the middle of a
        database driver's call could leave its connection unusable for the attempt's record.
        """
        self.in_shield = True
        try:
            yield
        finally:
            self.in_shield = False
        self.raise_if_stopped()

    def raise_if_stopped(self) -> None:
        if self.stop is not None:
            raise self.stop()

    def confirmed(self) -> None:
        """Note that a fenced write just found the job still this claim's."""
        self.check_due = time.monotonic() + CHECK_INTERVAL_SECONDS

    def tell_to_stop(self, stop: Stop) -> None:
        """Make the handler raise `stop`: at once in the main thread, else at its next report.

        The first reason is kept: a job cancelled after its deadline still timed out.
        """
        if self.stop is not None:
            return
        self.stop, self.stopped_at = stop, time.monotonic()
        if self.running and self.interruptible:
            signal.pthread_kill(threading.main_thread().ident, STOP_SIGNAL)


# The keeper whose handler runs in this process's main thread, if any, and whether the tick's
# timer is ours to stop.
_interruptible: LeaseKeeper | None = None
_ticking = False


def _on_stop_signal(signum: int, frame: object) -> None:
    """Raise a pending stop in the handler; on a mere tick, only let the watchdog run."""
    keeper = _interruptible
    if keeper is None or not keeper.running or keeper.in_shield or keeper.signalled:
        return
    if keeper.stop is not None:
        keeper.signalled = True
        raise keeper.stop()


def _start_interrupting(keeper: LeaseKeeper) -> None:
    """Let the signal reach the handler of `keeper`, in the main thread, and tick meanwhile."""
    global _interruptible, _ticking
    # Installed for good: a signal that arrives just as a handler ends must find this one,
    # not the default action, which ends the process.
    if signal.getsignal(STOP_SIGNAL) is not _on_stop_signal:
        signal.signal(STOP_SIGNAL, _on_stop_signal)
    _interruptible = keeper
    # A profiler's timer is left alone; the handler then goes without ticks.
    if signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0):
        signal.setitimer(signal.ITIMER_PROF, TICK_SECONDS, TICK_SECONDS)
        _ticking = True


def _stop_interrupting() -> None:
    global _interruptible, _ticking
    if _ticking:
        signal.setitimer(signal.ITIMER_PROF, 0)
        _ticking = False
    _interruptible = None


# Only where Celery's prefork pool replaces a process that ends (allow_ending_process): a
# solo worker or a test would end for good.
_may_end_process = False


def allow_ending_process() -> None:
    """Let the watchdog end this process when a handler will not stop (a pool process)."""
    global _may_end_process
    _may_end_process = True


class _Watchdog(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="job-watchdog", daemon=True)
        self.keepers: set[LeaseKeeper] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.connected = False

    def hold(self, keeper: LeaseKeeper) -> None:
        with self.lock:
            self.keepers.add(keeper)
        # The thread looks at least every CHECK_INTERVAL_SECONDS; wake it only for a lease due
        # sooner. Waking it for every job made the job's process switch threads once more.
        if renewal_interval() < CHECK_INTERVAL_SECONDS:
            self.wake.set()

    def release(self, keeper: LeaseKeeper) -> None:
        with self.lock:
            self.keepers.discard(keeper)

    def run(self) -> None:
        while True:
            self.wake.wait(self._seconds_to_next_round())
            self.wake.clear()
            try:
                self._round()
            except Exception:
                # The thread must outlive any one round: without it, no lease is renewed.
                logger.exception("the job watchdog's round failed")

    def _round(self) -> None:
        now = time.monotonic()
        with self.lock:
            keepers = list(self.keepers)
        # Deadlines first: they need no query, and beside C code that holds the GIL this
        # thread gets it back after each query only at the next tick.
        for keeper in keepers:
            if keeper.running and keeper.stop is None and keeper.deadline <= now:
                keeper.tell_to_stop(SoftTimeLimitExceeded)
            elif keeper.running and keeper.stopped_at + STOP_GRACE_SECONDS <= now:
                self._end_process(keeper)
        for keeper in keepers:
            if keeper.renew_due <= now:
                self._renew(keeper, now=now)
        self._check_claims(
            [k for k in keepers if k.running and k.stop is None and k.check_due <= now], now=now
        )
        if self.connected and not keepers:
            # Idle: a connection kept between jobs doubled every worker process's database
            # sessions, and pytest could not drop its PostgreSQL test database past one.
            self._disconnect()

    def _disconnect(self) -> None:
        connections.close_all()
        self.connected = False

    def _seconds_to_next_round(self) -> float:
        with self.lock:
            keepers = list(self.keepers)
        due = [keeper.renew_due for keeper in keepers]
        for keeper in keepers:
            if keeper.running and keeper.stop is None:
                due += [keeper.check_due, keeper.deadline]
            elif keeper.running:
                due.append(keeper.stopped_at + STOP_GRACE_SECONDS)
        now = time.monotonic()
        return max(0.0, min([CHECK_INTERVAL_SECONDS, *(at - now for at in due)]))

    def _renew(self, keeper: LeaseKeeper, *, now: float) -> None:
        keeper.renew_due = now + renewal_interval()
        self.connected = True
        try:
            if not keeper.renew():
                keeper.renew_due = math.inf
                keeper.tell_to_stop(JobInterrupted)
        except Exception:
            # The lease lapses if renewals keep failing; the reaper then takes the job back.
            logger.exception("lease renewal failed", extra=log_fields(keeper.job.pk, keeper.job))
            self._disconnect()  # It may be the connection: the next round opens another.

    def _check_claims(self, keepers: list[LeaseKeeper], *, now: float) -> None:
        """Tell the handlers whose job is no longer their claim's to stop; one query for all."""
        if not keepers:
            return
        # Due again in an interval even if the check fails: a check that stayed due made the
        # next round start at once, and the thread spun on a down database, logging a
        # traceback every few milliseconds until it came back.
        for keeper in keepers:
            keeper.check_due = now + CHECK_INTERVAL_SECONDS
        self.connected = True
        jobs = Job.objects.filter(pk__in=[keeper.job.pk for keeper in keepers])
        try:
            held = set(jobs.filter(status=Job.Status.IN_PROGRESS).values_list("pk", "claim_token"))
        except Exception:
            logger.exception("checking %d running job(s) failed", len(keepers))
            self._disconnect()
            return
        for keeper in keepers:
            if (keeper.job.pk, keeper.job.claim_token) not in held:
                keeper.tell_to_stop(JobInterrupted)

    def _end_process(self, keeper: LeaseKeeper) -> None:
        """Record the attempt of a handler that would not stop, and end the process."""
        log = log_fields(keeper.job.pk, keeper.job)
        if not (_may_end_process and keeper.interruptible and keeper.abandon):
            logger.warning("job's handler did not stop when told to; it runs on", extra=log)
            keeper.stopped_at = math.inf  # Said once; nothing more to do here.
            return
        logger.error(
            "job's handler did not stop within %ss of being told to; ending its process",
            STOP_GRACE_SECONDS,
            extra=log,
        )
        try:
            keeper.abandon(keeper.stop)
        except Exception:
            # The reaper takes the job back once its lease lapses.
            logger.exception("recording the abandoned attempt failed", extra=log)
        finally:
            os._exit(os.EX_SOFTWARE)


_instance: _Watchdog | None = None
_instance_pid: int | None = None
_instance_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    """The process's watchdog thread, started on first use (and again in a forked child)."""
    global _instance, _instance_pid
    with _instance_lock:
        if _instance is None or _instance_pid != os.getpid():
            _instance, _instance_pid = _Watchdog(), os.getpid()
            _instance.start()
        return _instance
