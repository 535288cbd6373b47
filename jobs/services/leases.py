"""Keeping the leases of running jobs alive, from one background thread per worker process.

Handlers that never report progress keep their lease all the same, and a handler that does
learns at its next report when a renewal found the job cancelled or taken over. A lease is
never renewed past the attempt's deadline, so a worker stuck beyond its time limit lets the
reaper take the job back.

One thread serves every job the process runs: starting and joining a thread per job cost
more than running a short job (about 5 ms of a 16 ms job_run, measured with cProfile).
"""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import connections
from django.utils import timezone

from jobs.models import Job
from jobs.services.common import attempt_deadline, held_by, log_fields, transition

logger = logging.getLogger(__name__)

# How often the renewal thread looks for leases that are due, at the least.
MAX_SLEEP_SECONDS = 1.0


def renewal_interval() -> float:
    return min(settings.JOB_LEASE.total_seconds() / 3, 10.0)


class LeaseKeeper:
    """Hold a job's lease for as long as the `with` block runs."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.lost = threading.Event()
        # The first renewal is one interval after the claim, which set a full lease.
        self.due = time.monotonic() + renewal_interval()

    def __enter__(self) -> "LeaseKeeper":
        _renewer().hold(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _renewer().release(self)

    def renew(self) -> bool:
        """Extend the lease once; False if the job is no longer held by this claim."""
        now = timezone.now()
        grace = settings.JOB_HARD_TIMEOUT_GRACE
        expires = min(now + settings.JOB_LEASE, attempt_deadline(self.job) + grace)
        return bool(transition(held_by(self.job), lease_expires_at=expires))


class _Renewer(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="lease-renewer", daemon=True)
        self.keepers: set[LeaseKeeper] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def hold(self, keeper: LeaseKeeper) -> None:
        with self.lock:
            self.keepers.add(keeper)
        # The thread looks at least every MAX_SLEEP_SECONDS; wake it only for a lease due
        # sooner. Waking it for every job made the job's process switch threads once more.
        if renewal_interval() < MAX_SLEEP_SECONDS:
            self.wake.set()

    def release(self, keeper: LeaseKeeper) -> None:
        with self.lock:
            self.keepers.discard(keeper)

    def run(self) -> None:
        while True:
            self.wake.wait(self._seconds_to_next_due())
            self.wake.clear()
            due = self._due_keepers()
            for keeper in due:
                self._renew(keeper)
            if due:
                # Rounds are seconds apart. A connection kept between them doubled every
                # worker process's idle database sessions, and outlived the work: pytest could
                # not drop its PostgreSQL test database while this thread's session was open.
                connections.close_all()

    def _due_keepers(self) -> list[LeaseKeeper]:
        now = time.monotonic()
        with self.lock:
            return [keeper for keeper in self.keepers if keeper.due <= now]

    def _seconds_to_next_due(self) -> float:
        with self.lock:
            next_due = min((keeper.due for keeper in self.keepers), default=None)
        if next_due is None:
            return MAX_SLEEP_SECONDS
        return max(0.0, min(MAX_SLEEP_SECONDS, next_due - time.monotonic()))

    def _renew(self, keeper: LeaseKeeper) -> None:
        keeper.due = time.monotonic() + renewal_interval()
        try:
            if not keeper.renew():
                keeper.lost.set()
                self.release(keeper)
        except Exception:
            # The lease lapses if renewals keep failing; the reaper then takes the job back.
            logger.exception("lease renewal failed", extra=log_fields(keeper.job.pk, keeper.job))


_instance: _Renewer | None = None
_instance_pid: int | None = None
_instance_lock = threading.Lock()


def _renewer() -> _Renewer:
    """The process's renewal thread, started on first use (and again in a forked child)."""
    global _instance, _instance_pid
    with _instance_lock:
        if _instance is None or _instance_pid != os.getpid():
            _instance, _instance_pid = _Renewer(), os.getpid()
            _instance.start()
        return _instance
