"""The faults `make chaos` injects into a Stack, each at a random moment, and what they broke.

Each fault has a name, which is also its command-line flag (`--no-web-kill` leaves web kills
out) and its figure in the report:

- worker_kill: SIGKILL a job worker's main process and its pool (mostly while it runs a job),
  then start it again.
- pool_kill: SIGKILL one pool process of a busy job worker; Celery starts another.
- web_kill: SIGKILL a gunicorn worker process, which may hold submissions its publisher has not
  sent; gunicorn starts another.
- beat_kill: SIGKILL Beat, and start it again 5-20 s later.
- database_restart: on PostgreSQL (a private server only), stop it and start it again after
  1-3 s; on SQLite, hold its write lock for 10 s.
- redis_restart: SHUTDOWN NOSAVE, and start Redis again, empty.
- redis_flush: FLUSHDB on the running Redis.
- worker_freeze: SIGSTOP a busy job worker for longer than its lease, then SIGCONT: its job is
  taken over, and the woken worker must write nothing.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from scripts.pgcluster import PrivateCluster
from scripts.stack import Stack, children, connect_database

FAULTS = (
    "worker_kill",
    "pool_kill",
    "web_kill",
    "beat_kill",
    "database_restart",
    "redis_restart",
    "redis_flush",
    "worker_freeze",
)
# How long a kill waits for a worker to be running a job before it picks one anyway.
RUNNING_JOB_WAIT_SECONDS = 15.0
POLL_SECONDS = 0.05
# Down for a moment, as after a crash and a supervisor's restart; then a breather.
KILL_PAUSE_SECONDS = (0.5, 2.0)
AFTER_EVENT_SECONDS = (1.0, 3.0)
BEAT_DOWN_SECONDS = (5.0, 20.0)
DATABASE_DOWN_SECONDS = (1.0, 3.0)
SQLITE_LOCK_SECONDS = 10.0
# Past the lease (JOB_LEASE_SECONDS in chaos.CHAOS_ENV) by this much, so the reaper takes over.
FREEZE_BEYOND_LEASE_SECONDS = (2.0, 5.0)

RUNNING_CLAIMS_QUERY = "SELECT worker, claim_token FROM jobs_job WHERE status = 'in_progress'"


def chaos_plan(counts: dict[str, int], rng: random.Random) -> list[str]:
    """Every fault as many times as asked, in a random order."""
    plan = [fault for fault, count in counts.items() for _ in range(count)]
    rng.shuffle(plan)
    return plan


def chaos_timetable(plan: list[str], window: float, rng: random.Random) -> list[float]:
    """When each fault of `plan` should strike, in seconds into a load of `window` seconds.

    At random over the window, and the last one at its end, as the last jobs are submitted:
    the time from the last fault until every job is terminal then measures healing, not the
    rest of a load that goes on after the faults have stopped (a last fault 28 s before the
    end of a 21-minute load made that figure 27.6 s, where the jobs it left took 2).
    """
    if not plan:
        return []
    return [*sorted(rng.uniform(0, window) for _ in plan[1:]), window]


@dataclass(frozen=True)
class Window:
    """When a fault began and ended, in seconds since the run started."""

    fault: str
    start: float
    end: float


class Chaos:
    """Breaks the Stack on a plan, and counts what it broke."""

    def __init__(
        self, stack: Stack, *, started: float, lease_seconds: float, cluster: PrivateCluster | None
    ) -> None:
        self.stack = stack
        self.started = started
        self.lease_seconds = lease_seconds
        self.cluster = cluster
        self.rng = random.Random()  # noqa: S311 - chaos, not secrets.
        self.done: Counter[str] = Counter()
        self.kills_while_running = 0
        self.worker_exits = 0
        self.windows: list[Window] = []
        # Claims held by worker processes we killed or froze. A restarted worker has the same
        # name, so only the claim token tells its jobs from those of the process that died.
        self.dead_claims: set[str] = set()
        self.connection: Any = None

    @property
    def last_fault_end(self) -> float | None:
        return max((window.end for window in self.windows), default=None)

    def run(self, plan: list[str], deadline: float, at: list[float] | None = None) -> None:
        """Inject each fault of `plan` in turn, a breather after each; or each at its time.

        `at` gives each fault's time in seconds since `started` (chaos_timetable); a fault
        strikes then, or as soon as the one before it has ended.
        """
        try:
            for number, fault in enumerate(plan):
                if at is not None:
                    self.wait_until(at[number], deadline)
                if time.monotonic() >= deadline:
                    return
                start = self.now()
                getattr(self, fault)(deadline)
                self.windows.append(Window(fault, start, self.now()))
                self.done[fault] += 1
                if at is None:
                    time.sleep(self.rng.uniform(*AFTER_EVENT_SECONDS))
                self.restart_exited_workers()
        finally:
            if self.connection is not None:
                self.connection.close()
                self.connection = None

    def wait_until(self, moment: float, deadline: float) -> None:
        """Sleep until `moment` (seconds since `started`), restarting workers that stopped."""
        while self.now() < moment and time.monotonic() < deadline:
            time.sleep(max(0.0, min(1.0, moment - self.now())))
            self.restart_exited_workers()

    def now(self) -> float:
        return time.monotonic() - self.started

    # The faults

    def worker_kill(self, deadline: float) -> None:
        victim = self.busy_worker(deadline)
        self.stack.processes[victim].kill()
        # Whatever the victim still holds now was interrupted mid-run: its lease will lapse
        # and the reaper must give the job another attempt.
        interrupted = self.live_claims().get(victim, set())
        if interrupted:
            self.kills_while_running += 1
        self.dead_claims |= interrupted
        time.sleep(self.rng.uniform(*KILL_PAUSE_SECONDS))
        self.stack.start_worker(victim)

    def pool_kill(self, deadline: float) -> None:
        victim = self.busy_worker(deadline)
        pool = children(self.stack.processes[victim].process.pid)
        if pool:
            os.kill(self.rng.choice(pool), signal.SIGKILL)

    def web_kill(self, deadline: float) -> None:
        processes = self.stack.web_processes()
        if processes:
            os.kill(self.rng.choice(processes), signal.SIGKILL)

    def beat_kill(self, deadline: float) -> None:
        self.stack.processes["beat"].kill()
        time.sleep(self.rng.uniform(*BEAT_DOWN_SECONDS))
        self.stack.start_beat()

    def database_restart(self, deadline: float) -> None:
        if self.cluster is not None:
            self.cluster.stop(mode=self.rng.choice(["fast", "immediate"]))
            time.sleep(self.rng.uniform(*DATABASE_DOWN_SECONDS))
            self.cluster.start()
            return
        # SQLite: another process holds the write lock, as a long write or backup would.
        path = self.stack.database_url.removeprefix("sqlite:///")
        blocker = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            time.sleep(SQLITE_LOCK_SECONDS)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()

    def redis_restart(self, deadline: float) -> None:
        self.stack.restart_redis()

    def redis_flush(self, deadline: float) -> None:
        self.stack.flush_redis()

    def worker_freeze(self, deadline: float) -> None:
        victim = self.busy_worker(deadline)
        process = self.stack.processes[victim]
        process.signal_group(signal.SIGSTOP)
        try:
            self.dead_claims |= self.live_claims().get(victim, set())
            time.sleep(self.lease_seconds + self.rng.uniform(*FREEZE_BEYOND_LEASE_SECONDS))
        finally:
            process.signal_group(signal.SIGCONT)

    # Helpers

    def busy_worker(self, deadline: float) -> str:
        """A job worker that runs a job, or any if none does within RUNNING_JOB_WAIT_SECONDS."""
        until = min(deadline, time.monotonic() + RUNNING_JOB_WAIT_SECONDS)
        while time.monotonic() < until:
            busy = self.live_claims()
            if busy:
                return self.rng.choice(sorted(busy))
            time.sleep(POLL_SECONDS)
        return self.rng.choice(self.stack.worker_names)

    def live_claims(self) -> dict[str, set[str]]:
        """The claims each of our workers holds on running jobs, leaving out dead processes'."""
        claims: dict[str, set[str]] = {}
        for worker, token in self.read(RUNNING_CLAIMS_QUERY):
            name = worker.split("@", 1)[0]  # Celery's hostname: worker1@host.
            if name in self.stack.worker_names and str(token) not in self.dead_claims:
                claims.setdefault(name, set()).add(str(token))
        return claims

    def read(self, query: str) -> list[tuple[Any, ...]]:
        """Rows of `query`; none while the database is down, on purpose or not."""
        for _ in range(2):
            try:
                if self.connection is None:
                    self.connection = connect_database(self.stack.database_url)
                return list(self.connection.execute(query).fetchall())
            except Exception:
                # A restart cut the connection: connect afresh once, then give up for now.
                with contextlib.suppress(Exception):
                    self.connection.close()
                self.connection = None
        return []

    def restart_exited_workers(self) -> None:
        """Start again a worker that stopped by itself, as a process supervisor would.

        A Celery worker can stop when Redis goes away under it (kombu's restore of its
        unacknowledged messages fails on the dead connection: "Unrecoverable error:
        AttributeError"), or when its database connection breaks at start-up. Each worker
        kind alone serves its queues, so without a restart that kind's jobs would wait for
        ever; the count is printed, so a run says when it happened. The webhooks worker and
        the housekeeping worker, where the Stack runs them, are Celery workers too. Beat
        exits when the database is down as it starts (its scheduler reads its entries from
        the database), which happens when a database restart follows a Beat kill at once;
        without it nothing is dispatched or reaped again. It is down on purpose only within
        beat_kill, which runs on this same thread.
        """
        for name in self.stack.worker_names:
            if not self.stack.processes[name].alive:
                self.stack.start_worker(name)
                self.worker_exits += 1
        for name, start in (
            ("webhooks", self.stack.start_webhooks),
            ("housekeeping", self.stack.start_housekeeping),
            ("beat", self.stack.start_beat),
        ):
            process = self.stack.processes.get(name)
            if process is not None and not process.alive:
                start()
                self.worker_exits += 1
