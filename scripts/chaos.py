"""Kill workers and wipe Redis while jobs run, and check that every job ends exactly once.

The promise under test: every accepted job reaches exactly one terminal state (completed,
failed or cancelled) and has at most one result, whatever happens to workers and the broker.
This submits a mix of jobs over HTTP to real processes on 127.0.0.1 (web, the Procfile's job
workers — one `worker` for quick jobs and one `worker-long` for `long` and `cpu` — Beat, Redis)
while it SIGKILLs workers of both kinds, mostly while they run a job, and restarts Redis
empty. Then it reads the database, the truth, and prints one `name: value unit` line per
figure:

    python scripts/chaos.py                 # 1,000 jobs, 10 kills, 1 Redis wipe, SQLite
    python scripts/chaos.py --quick         # 200 jobs, 3 kills, 1 Redis wipe
    python scripts/chaos.py --database-url postgres://postgres@127.0.0.1:5432/chaos
    python scripts/chaos.py --no-webhooks   # jobs only

Meanwhile the Procfile's webhooks worker tells every terminal state to a receiver on
127.0.0.1 that fails 30% of requests (scripts/chaos_webhooks.py), and the count waits until
each was told.

Exits non-zero if a job was lost (not terminal by the deadline) or duplicated (more than one
result or successful attempt), if a terminal state was not told, or told under two
webhook-ids, or if the chaos did not happen as asked. The work dir, with one log per process,
is kept then and its path printed.
"""

from __future__ import annotations

import argparse
import http.client
import math
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.chaos_webhooks import (
    WEBHOOK_ENV,
    FlakyReceiver,
    Hooks,
    endpoint_create,
    print_webhook_figures,
    wait_until_told,
    webhook_failures,
)
from scripts.stack import Api, Stack, connect_database, recreate_postgres_database

# Recovery timings measured in seconds rather than minutes, so that a killed worker's jobs
# come back while the run is still going.
CHAOS_ENV = {
    "JOB_LEASE_SECONDS": "6",
    "JOB_REAP_INTERVAL_SECONDS": "2",
    "JOB_REDISPATCH_AFTER_SECONDS": "10",
    "JOB_RETRY_BACKOFF_BASE_SECONDS": "0.5",
    # The token must outlive the longest run, or late submissions would get 401.
    "JWT_ACCESS_MINUTES": "120",
}
TERMINAL_STATUSES = ("completed", "failed", "cancelled")

# Mostly quick jobs, a few long ones to be killed in the middle of, some scheduled for later.
JOB_MIX = {"echo": 30, "word_count": 22, "checksum": 22, "primes": 20, "sleep": 6}
SCHEDULED_SHARE = 0.1
SCHEDULED_AHEAD_SECONDS = (2.0, 8.0)
CALLBACK_SHARE = 0.1
# Well above the kills one job can suffer, so a job only fails if recovery itself is broken.
MAX_RETRIES = 10
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "workers", "die"]

SUBMIT_ATTEMPTS = 8
SUBMIT_RETRY_PAUSE_SECONDS = 0.25
# How long a kill waits for a worker to be running a job before it kills one anyway.
RUNNING_JOB_WAIT_SECONDS = 15.0
POLL_SECONDS = 0.05
DRAIN_POLL_SECONDS = 0.5
# Down for a moment, as after a crash and a supervisor's restart; then a breather.
KILL_PAUSE_SECONDS = (0.5, 2.0)
AFTER_EVENT_SECONDS = (1.0, 3.0)


def random_parameters(job_type: str, rng: random.Random) -> dict[str, Any]:
    """Small parameters: the run is about crashes, not about how fast handlers are."""
    text = " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "echo": lambda: {"message": text[:80]},
        "word_count": lambda: {"text": text, "top": 3},
        "checksum": lambda: {"text": text, "algorithm": rng.choice(["sha256", "md5", "blake2b"])},
        "primes": lambda: {"limit": rng.randint(1_000, 200_000)},
        "sleep": lambda: {"seconds": round(rng.uniform(1.0, 5.0), 2)},
    }
    return makers[job_type]()


def job_request(number: int, rng: random.Random, callback_url: str | None) -> dict[str, Any]:
    """The body of one POST /api/jobs/; a scheduled time is relative to now, so build it late.

    With a `callback_url`, a share of the jobs (CALLBACK_SHARE) asks for its terminal event
    there.
    """
    job_type = rng.choices(list(JOB_MIX), weights=list(JOB_MIX.values()))[0]
    body: dict[str, Any] = {
        "name": f"chaos {number}",
        "job_type": job_type,
        "parameters": random_parameters(job_type, rng),
        "max_retries": MAX_RETRIES,
    }
    if rng.random() < SCHEDULED_SHARE:
        ahead = timedelta(seconds=rng.uniform(*SCHEDULED_AHEAD_SECONDS))
        body["scheduled_time"] = (datetime.now(UTC) + ahead).isoformat()
    if callback_url and rng.random() < CALLBACK_SHARE:
        body["callback_url"] = callback_url
    return body


# Submitting


@dataclass
class Submissions:
    accepted: set[uuid.UUID] = field(default_factory=set)
    # The final HTTP status of each submission: 201 (or 200 for a replay of our own earlier
    # try), else what the last try got; 0 is a connection that never answered.
    statuses: Counter[int] = field(default_factory=Counter)
    # The callback_secret of each accepted job that asked for a callback.
    callback_secrets: dict[uuid.UUID, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, job: dict[str, Any] | None) -> None:
        with self.lock:
            self.statuses[status] += 1
            if job is not None:
                self.accepted.add(uuid.UUID(job["id"]))
                if job.get("callback_secret"):
                    self.callback_secrets[uuid.UUID(job["id"])] = job["callback_secret"]


def submit_one(
    api: Api, body: dict[str, Any], deadline: float
) -> tuple[int, dict[str, Any] | None]:
    """POST one job, trying again with the same Idempotency-Key until the server answers.

    A retry after a dropped connection or a 5xx (the throttle's cache lives in Redis, which we
    wipe) cannot create a second job: the key makes the server return the first one, with 200.
    """
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    status = 0
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        try:
            status, data = api.request("POST", "/api/jobs/", body, headers)
        except (OSError, http.client.HTTPException):
            status = 0
        if status in (200, 201):
            return status, data
        if 0 < status < 500 and status != 429:
            return status, None  # The server's answer is final: retrying would not change it.
        if time.monotonic() >= deadline:
            break
        time.sleep(SUBMIT_RETRY_PAUSE_SECONDS * attempt)
    return status, None


def submit_all(
    base_url: str,
    token: str,
    jobs: int,
    clients: int,
    deadline: float,
    callback_url: str | None = None,
) -> Submissions:
    """Submit `jobs` jobs from `clients` threads, each on its own keep-alive connection."""
    submissions = Submissions()

    def client(numbers: range) -> None:
        api = Api(base_url, token)
        rng = random.Random()  # noqa: S311 - a job mix, not a secret.
        for number in numbers:
            if time.monotonic() >= deadline:
                break
            body = job_request(number, rng, callback_url)
            submissions.record(*submit_one(api, body, deadline))
        api.close()

    shares = [range(n, jobs, clients) for n in range(clients)]
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, shares))
    return submissions


# Reading the database


Connection = Any  # a DB-API connection from stack.connect_database


def rows(connection: Connection, query: str) -> list[tuple[Any, ...]]:
    return list(connection.execute(query).fetchall())


def job_statuses(connection: Connection) -> dict[uuid.UUID, str]:
    # SQLite stores UUIDs as 32 hex digits and PostgreSQL as uuid; UUID() reads both.
    return {uuid.UUID(str(pk)): status for pk, status in rows(connection, JOB_STATUS_QUERY)}


JOB_STATUS_QUERY = "SELECT id, status FROM jobs_job"
RUNNING_CLAIMS_QUERY = "SELECT worker, claim_token FROM jobs_job WHERE status = 'in_progress'"
RESULTS_PER_JOB_QUERY = "SELECT job_id, COUNT(*) FROM jobs_jobresult GROUP BY job_id"
SUCCESSES_PER_JOB_QUERY = (
    "SELECT job_id, COUNT(*) FROM jobs_jobattempt WHERE outcome = 'succeeded' GROUP BY job_id"
)
ATTEMPT_OUTCOMES_QUERY = "SELECT outcome, COUNT(*) FROM jobs_jobattempt GROUP BY outcome"


# Chaos


def chaos_plan(kills: int, redis_wipes: int) -> list[str]:
    """The kills in order, with the Redis wipes spread evenly among them."""
    plan = ["kill"] * kills
    for n in range(redis_wipes, 0, -1):  # From the back, so earlier positions stay put.
        plan.insert(round(n * kills / (redis_wipes + 1)), "wipe")
    return plan


class Chaos:
    """Breaks the Stack's workers and broker on a plan, and counts what it broke."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.rng = random.Random()  # noqa: S311 - chaos, not secrets.
        self.kills = 0
        self.kills_while_running = 0
        self.redis_wipes = 0
        self.worker_exits = 0
        # Claims held by worker processes we killed. The restarted worker has the same name,
        # so only the claim token tells its jobs from those of the process that died.
        self.dead_claims: set[str] = set()

    def run(self, plan: list[str], deadline: float) -> None:
        connection = connect_database(self.stack.database_url)
        try:
            for event in plan:
                if time.monotonic() >= deadline:
                    return
                if event == "kill":
                    self.kill_a_worker(connection, deadline)
                else:
                    self.wipe_redis()
                time.sleep(self.rng.uniform(*AFTER_EVENT_SECONDS))
                self.restart_exited_workers()
        finally:
            connection.close()

    def kill_a_worker(self, connection: Connection, deadline: float) -> None:
        """SIGKILL a worker running a job (any worker if none runs one soon), then restart it."""
        victim = self.wait_for_busy_worker(connection, deadline)
        if victim is None:
            victim = self.rng.choice(self.stack.worker_names)
        self.stack.processes[victim].kill()
        self.kills += 1
        # Whatever the victim still holds now was interrupted mid-run: its lease will lapse
        # and the reaper must give the job another attempt.
        interrupted = self.live_claims(connection).get(victim, set())
        if interrupted:
            self.kills_while_running += 1
        self.dead_claims |= interrupted
        time.sleep(self.rng.uniform(*KILL_PAUSE_SECONDS))
        self.stack.start_worker(victim)

    def wait_for_busy_worker(self, connection: Connection, deadline: float) -> str | None:
        until = min(deadline, time.monotonic() + RUNNING_JOB_WAIT_SECONDS)
        while time.monotonic() < until:
            busy = self.live_claims(connection)
            if busy:
                return self.rng.choice(sorted(busy))
            time.sleep(POLL_SECONDS)
        return None

    def live_claims(self, connection: Connection) -> dict[str, set[str]]:
        """The claims each of our workers holds on running jobs, leaving out dead processes'."""
        claims: dict[str, set[str]] = {}
        for worker, token in rows(connection, RUNNING_CLAIMS_QUERY):
            name = worker.split("@", 1)[0]  # Celery's hostname: worker1@host.
            if name in self.stack.worker_names and str(token) not in self.dead_claims:
                claims.setdefault(name, set()).add(str(token))
        return claims

    def restart_exited_workers(self) -> None:
        """Start again a worker that stopped by itself, as a process supervisor would.

        A Celery worker can stop when Redis goes away under it (kombu's restore of its
        unacknowledged messages fails on the dead connection: "Unrecoverable error:
        AttributeError"). Each worker kind alone serves its queues, so without a restart that
        kind's jobs would wait for ever; the count is printed, so a run says when it happened.
        The webhooks worker, where the Stack runs one, is a Celery worker too.
        """
        for name in self.stack.worker_names:
            if not self.stack.processes[name].alive:
                self.stack.start_worker(name)
                self.worker_exits += 1
        webhooks = self.stack.processes.get("webhooks")
        if webhooks is not None and not webhooks.alive:
            self.stack.start_webhooks()
            self.worker_exits += 1

    def wipe_redis(self) -> None:
        """Restart Redis empty: every queued and unacknowledged message is gone."""
        self.stack.restart_redis()
        self.redis_wipes += 1


# Draining and counting


def wait_until_terminal(
    database_url: str, job_ids: set[uuid.UUID], deadline: float, chaos: Chaos
) -> None:
    connection = connect_database(database_url)
    try:
        while time.monotonic() < deadline:
            statuses = job_statuses(connection)
            if all(statuses.get(pk) in TERMINAL_STATUSES for pk in job_ids):
                return
            time.sleep(DRAIN_POLL_SECONDS)
            chaos.restart_exited_workers()
    finally:
        connection.close()


def terminal_statuses(database_url: str, accepted: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The final status of each accepted job that has one."""
    connection = connect_database(database_url)
    try:
        statuses = job_statuses(connection)
    finally:
        connection.close()
    return {pk: statuses[pk] for pk in accepted if statuses.get(pk) in TERMINAL_STATUSES}


def count_outcomes(database_url: str, accepted: set[uuid.UUID]) -> dict[str, Any]:
    """Read the figures that prove or break the promise straight from the database."""
    connection = connect_database(database_url)
    try:
        statuses = job_statuses(connection)
        results = {uuid.UUID(str(pk)): n for pk, n in rows(connection, RESULTS_PER_JOB_QUERY)}
        successes = {uuid.UUID(str(pk)): n for pk, n in rows(connection, SUCCESSES_PER_JOB_QUERY)}
        attempts = dict(rows(connection, ATTEMPT_OUTCOMES_QUERY))
    finally:
        connection.close()
    terminal = Counter(statuses.get(pk) for pk in accepted)
    completed = {pk for pk, status in statuses.items() if status == "completed"}
    return {
        "terminal": sum(terminal[status] for status in TERMINAL_STATUSES),
        "lost": sum(statuses.get(pk) not in TERMINAL_STATUSES for pk in accepted),
        "duplicated": len(
            {pk for pk, n in results.items() if n > 1}
            | {pk for pk, n in successes.items() if n > 1}
        ),
        # A completed job without its one result and one successful attempt, or a result for
        # a job that did not complete, breaks the promise as surely as a duplicate does.
        "inconsistent": len(
            {pk for pk in completed if results.get(pk) != 1 or successes.get(pk) != 1}
            | (set(results) - completed)
        ),
        # Jobs the database holds that no client was told about: an idempotent retry failed.
        "untracked": len(set(statuses) - accepted),
        **{status: terminal[status] for status in TERMINAL_STATUSES},
        "attempts": attempts,
    }


# Running it all


@dataclass
class RunSettings:
    jobs: int
    clients: int
    kills: int
    redis_wipes: int
    deadline: float
    database_url: str | None
    # Whether an endpoint and callbacks hear the jobs' terminal states, and how long after
    # the jobs have finished every one of them may take to be told.
    webhooks: bool
    told_within: float


def run_chaos(
    stack: Stack, settings: RunSettings, receiver: FlakyReceiver | None
) -> dict[str, Any]:
    """Submit jobs while the chaos runs, wait for every job to finish, and count.

    With a receiver, the user's endpoint and a share of its jobs' callbacks point there, and
    the count waits until every terminal state was told.
    """
    token = stack.login(*stack.create_verified_user())
    endpoint_secret = ""
    if receiver is not None:
        endpoint_secret = endpoint_create(Api(stack.base_url, token), receiver.endpoint_url)
    chaos = Chaos(stack)
    started = time.monotonic()
    deadline = started + settings.deadline
    with ThreadPoolExecutor(max_workers=1) as background:
        submitting = background.submit(
            submit_all,
            stack.base_url,
            token,
            settings.jobs,
            settings.clients,
            deadline,
            receiver.callback_url if receiver is not None else None,
        )
        # The chaos runs on this thread, which outlives the Stack: the kernel SIGTERMs a
        # process the Stack starts as soon as the *thread* that started it exits (the
        # parent-death signal of prctl(2)), so a restarted worker or Redis must not be started
        # from a short-lived thread.
        chaos.run(chaos_plan(settings.kills, settings.redis_wipes), deadline)
        submissions = submitting.result()  # Bounded by the deadline too.
    wait_until_terminal(stack.database_url, submissions.accepted, deadline, chaos)
    drain_time = time.monotonic() - started
    figures = count_outcomes(stack.database_url, submissions.accepted)
    if receiver is not None:
        hooks = Hooks(receiver, endpoint_secret, submissions.callback_secrets)
        figures |= wait_until_told(
            hooks,
            lambda: terminal_statuses(stack.database_url, submissions.accepted),
            settings.told_within,
            chaos.restart_exited_workers,
        )
    submitted = submissions.statuses.total()  # Fewer than asked if the deadline struck.
    return {
        "submitted": submitted,
        "accepted": len(submissions.accepted),
        "rejected": submitted - len(submissions.accepted),
        "statuses": dict(submissions.statuses),
        **figures,
        "kills": chaos.kills,
        "kills_while_running": chaos.kills_while_running,
        "redis_wipes": chaos.redis_wipes,
        "worker_exits": chaos.worker_exits,
        "drain_time": drain_time,
    }


def failures(figures: dict[str, Any], settings: RunSettings) -> list[str]:
    """What makes the run fail: a broken promise, or chaos too mild to prove anything."""
    problems = [name for name in ("lost", "duplicated", "inconsistent") if figures[name]]
    # At least half the kills must hit a running job; a kill of an idle worker tests little.
    if (
        figures["kills"] < settings.kills
        or figures["kills_while_running"] < math.ceil(settings.kills / 2)
        or figures["redis_wipes"] < settings.redis_wipes
    ):
        problems.append("chaos_incomplete")
    if settings.webhooks:
        problems += webhook_failures(figures)
    return problems


def print_figures(figures: dict[str, Any], database: str) -> None:
    rejected = f" {figures['statuses']}" if figures["rejected"] else ""
    print(f"database: {database}")
    for name in ("submitted", "accepted"):
        print(f"{name}: {figures[name]} jobs")
    print(f"rejected: {figures['rejected']} jobs{rejected}")
    for name in ("terminal", "lost", "duplicated", "inconsistent", "untracked"):
        print(f"{name}: {figures[name]} jobs")
    for name in TERMINAL_STATUSES:
        print(f"{name}: {figures[name]} jobs")
    print(f"kills: {figures['kills']} kills")
    print(f"kills_while_running: {figures['kills_while_running']} kills")
    print(f"redis_wipes: {figures['redis_wipes']} wipes")
    print(f"worker_exits: {figures['worker_exits']} workers restarted after stopping by themselves")
    print(f"drain_time: {figures['drain_time']:.1f} s")
    print(f"attempts_total: {sum(figures['attempts'].values())} attempts")
    for outcome, count in sorted(figures["attempts"].items()):
        print(f"attempts_{outcome}: {count} attempts")
    if "told" in figures:
        print_webhook_figures(figures)


def parse_settings(argv: list[str] | None = None) -> RunSettings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10, help="worker SIGKILLs")
    parser.add_argument("--redis-wipes", type=int, default=1, help="Redis restarts, empty")
    parser.add_argument(
        "--deadline", type=float, default=300.0, help="seconds for the whole run, then count"
    )
    parser.add_argument("--database-url", help="PostgreSQL, recreated; default: a new SQLite")
    parser.add_argument("--quick", action="store_true", help="200 jobs, 3 kills, 1 wipe")
    parser.add_argument(
        "--webhooks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check that every terminal state reaches a receiver that fails 30%% of requests",
    )
    parser.add_argument(
        "--told-within",
        type=float,
        default=120.0,
        help="seconds after the jobs finish for every terminal state to be told",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.kills, args.redis_wipes = 200, 3, 1
    if args.database_url and not args.database_url.startswith("postgres"):
        parser.error("--database-url takes a postgres:// URL; SQLite is the default")
    return RunSettings(
        args.jobs,
        args.clients,
        args.kills,
        args.redis_wipes,
        args.deadline,
        args.database_url,
        args.webhooks,
        args.told_within,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    if settings.database_url:
        recreate_postgres_database(settings.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    problems = ["crashed"]  # Until the run says otherwise, keep the logs.
    try:
        with (
            FlakyReceiver() if settings.webhooks else nullcontext() as receiver,
            Stack(
                workdir,
                database_url=settings.database_url,
                webhooks=settings.webhooks,
                env=CHAOS_ENV | (WEBHOOK_ENV if settings.webhooks else {}),
            ) as stack,
        ):
            figures = run_chaos(stack, settings, receiver)
        print_figures(figures, "postgresql" if settings.database_url else "sqlite")
        problems = failures(figures, settings)
        print(f"result: {'FAILED: ' + ', '.join(problems) if problems else 'ok'}")
    finally:
        if problems:
            print(f"logs: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
