"""The race half of the fairness phase: do concurrency limits hold when claims collide?

Four worker processes consume the same queues while several users' bulk submissions land at
once, with a per-user limit (JOB_USER_CONCURRENCY, and one user with a lower
`max_running_jobs`) and a job type with a limit of its own (primes). Afterwards the database
is the witness: each row of jobs_jobattempt is one claim, with the time it started and the
time it finished, and a sweep over those intervals finds the most that ever ran at once per
user and per limited type.

Why the attempts' own timestamps can be trusted for this: a completion stamps `finished_at`
before the UPDATE that frees its slot; admission counts the occupied slots under its lock only
after that UPDATE commits, and publishes the job it admits after that; the claim of that job
stamps `started_at` when its message arrives, later still. So on one machine's clock the next
interval on a freed slot starts after the last one ended, and any overlap beyond a limit is a
real one. (A cancelled running job frees its slot at the cancel, while its handler may run on
for up to half a second: the race cancels nothing.) `overlap_sweep` says how ties count.

    python scripts/bench_race.py --claims 2000            # SQLite, about a minute
    python scripts/bench_race.py --database-url postgres://postgres@127.0.0.1:5432/race
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench import BULK_LIMIT, Figures, as_datetime, submit_concurrently
from scripts.stack import (
    Stack,
    WorkerSpec,
    connect_database,
    procfile_workers,
    recreate_postgres_database,
)

RACE_WORKERS = 4
USER_LIMIT = 2
# Four users, three at the default limit and one at a lower one of its own: together they may
# run 7 jobs on the 4 worker slots, so the limits are reached and contested, with enough jobs
# admitted at a time to keep the workers busy (each admission waits for a completion).
RACE_USERS = 4
LOW_LIMIT_USER_MAX_RUNNING = 1
# Quick jobs, so that claims and completions (and the admissions between them) come thick and
# fast; primes is the type with a limit of its own.
JOB_MIX = (
    ("echo", {"message": "race"}),
    ("primes", {"limit": 20_000}),
    ("sleep", {"seconds": 0.01}),
)
POLL_SECONDS = 0.5
DRAIN_SECONDS_PER_CLAIM = 0.06
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
Connection = Any  # a DB-API connection from stack.connect_database


@dataclass(frozen=True)
class Overlap:
    """What a sweep found: the most intervals open at once, and the starts over the limit."""

    most_at_once: int
    starts_over_limit: int


def overlap_sweep(intervals: Iterable[tuple[Any, Any | None]], limit: int) -> Overlap:
    """Sweep (start, end) intervals in time order; an end of None means still open.

    An interval that ends at the instant another starts does not overlap it: ends are counted
    before starts at the same time, as a slot freed at t may be given out at t. Each start that
    leaves more than `limit` open is one violation.
    """
    events: list[tuple[Any, int]] = []
    for start, end in intervals:
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    events.sort(key=lambda event: (event[0], event[1]))
    open_now = most = over = 0
    for _, change in events:
        open_now += change
        most = max(most, open_now)
        if change > 0 and open_now > limit:
            over += 1
    return Overlap(most, over)


# Setting up the race


def race_stack(workdir: Path, database_url: str | None) -> Stack:
    """Four one-process workers on every job queue, so any two of them can claim at once."""
    queues = ",".join(
        dict.fromkeys(
            queue
            for spec in procfile_workers({"worker": 1, "worker-long": 1}).values()
            for queue in spec.queues.split(",")
        )
    )
    workers = {f"race{n}": WorkerSpec(queues, 1) for n in range(1, RACE_WORKERS + 1)}
    env = {
        "JOB_USER_CONCURRENCY": str(USER_LIMIT),
        "MAX_ACTIVE_JOBS_PER_USER": "1000000",
        "JWT_ACCESS_MINUTES": "120",
    }
    return Stack(workdir, database_url=database_url, web_workers=1, workers=workers, env=env)


def set_user_fields(connection: Connection, email: str, **fields: int) -> None:
    """Set a user's scheduling fields (max_running_jobs, fair_share_weight) by email."""
    assignments = ", ".join(f"{name} = {int(value)}" for name, value in fields.items())
    statement = f"UPDATE users_customuser SET {assignments} WHERE email = %s"  # noqa: S608 - our own names
    query(connection, statement, (email,))


def query(connection: Connection, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    if connection.__class__.__module__.startswith("sqlite3"):
        statement = statement.replace("%s", "?")
    cursor = connection.execute(statement, params)
    return list(cursor.fetchall()) if cursor.description else []


def type_limits(stack: Stack) -> dict[str, int]:
    """The job types with a concurrency limit of their own, as the service's registry says."""
    output = stack.manage(
        "shell",
        input_text=(
            "import json\n"
            "from jobs import handlers\n"
            "print(json.dumps({h.name: getattr(h, 'concurrency_limit', None) "
            "for h in handlers.all_handlers()}))\n"
        ),
    )
    limits = json.loads(output.strip().splitlines()[-1])
    return {name: limit for name, limit in limits.items() if limit}


def race_jobs(user: int, count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"race {user}.{n}", "job_type": job_type, "parameters": parameters}
        for n in range(count)
        for job_type, parameters in [JOB_MIX[(n + user) % len(JOB_MIX)]]
    ]


def submit_all_at_once(stack: Stack, tokens: list[str], claims: int) -> None:
    """Every user's jobs in bulk requests, all users at once, so admissions race claims."""

    def submit(user: int) -> list[int]:
        jobs = race_jobs(user, len(range(user, claims, len(tokens))))
        requests = [
            ("/api/jobs/bulk/", {"jobs": jobs[n : n + BULK_LIMIT]})
            for n in range(0, len(jobs), BULK_LIMIT)
        ]
        return submit_concurrently(stack.base_url, tokens[user], requests, 2)[1]

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        statuses = [status for result in pool.map(submit, range(len(tokens))) for status in result]
    refused = [status for status in statuses if status != 201]
    if refused:
        raise RuntimeError(f"race: {len(refused)} bulk requests refused, e.g. {refused[:5]}")


def wait_until_all_terminal(connection: Connection, jobs: int, timeout: float) -> None:
    placeholders = ", ".join(["%s"] * len(TERMINAL_STATUSES))
    statement = f"SELECT COUNT(*) FROM jobs_job WHERE status IN ({placeholders})"  # noqa: S608
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = query(connection, statement, TERMINAL_STATUSES)[0][0]
        if done >= jobs:
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"race: only {done} of {jobs} jobs finished in {timeout:.0f}s")


# Counting


ATTEMPTS_QUERY = """
SELECT u.email, j.job_type, a.started_at, a.finished_at
FROM jobs_jobattempt a
JOIN jobs_job j ON j.id = a.job_id
JOIN users_customuser u ON u.id = j.owner_id
"""


def count_violations(
    connection: Connection, user_limits: dict[str, int], limits_by_type: dict[str, int]
) -> dict[str, tuple[Overlap, int]]:
    """Sweep every user's and every limited type's claims; map each group to (overlap, limit)."""
    by_user: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    by_type: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for email, job_type, started_at, finished_at in query(connection, ATTEMPTS_QUERY):
        interval = (as_datetime(started_at), as_datetime(finished_at))
        by_user[email].append(interval)
        by_type[job_type].append(interval)
    groups = {}
    for number, (email, limit) in enumerate(user_limits.items(), 1):
        groups[f"user{number}"] = (overlap_sweep(by_user[email], limit), limit)
    for job_type, limit in limits_by_type.items():
        groups[f"type_{job_type}"] = (overlap_sweep(by_type[job_type], limit), limit)
    return groups


def measure_race(figures: Figures, database_url: str | None, claims: int) -> None:
    """Race `claims` claims over four worker processes and count limit violations."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-race-"))
    started = time.monotonic()
    with race_stack(workdir, database_url) as stack:
        connection = connect_database(stack.database_url)
        users = stack.create_verified_users(RACE_USERS)
        user_limits = {email: USER_LIMIT for email, _ in users}
        low_limit_user = users[-1][0]
        set_user_fields(connection, low_limit_user, max_running_jobs=LOW_LIMIT_USER_MAX_RUNNING)
        user_limits[low_limit_user] = LOW_LIMIT_USER_MAX_RUNNING
        limits_by_type = type_limits(stack)
        tokens = [stack.login(email, password) for email, password in users]
        submit_all_at_once(stack, tokens, claims)
        wait_until_all_terminal(connection, claims, 60 + claims * DRAIN_SECONDS_PER_CLAIM)
        groups = count_violations(connection, user_limits, limits_by_type)
        attempts = query(connection, "SELECT COUNT(*) FROM jobs_jobattempt")[0][0]
        connection.close()
    shutil.rmtree(workdir, ignore_errors=True)
    figures.add("race_worker_processes", RACE_WORKERS, "processes")
    figures.add("race_claims", attempts, "claims")
    for group, (overlap, limit) in groups.items():
        figures.add(f"race_{group}_most_at_once", overlap.most_at_once, f"jobs (limit {limit})")
        figures.add(f"race_{group}_starts_over_limit", overlap.starts_over_limit, "claims")
    figures.add(
        "race_groups_at_limit",
        sum(overlap.most_at_once == limit for overlap, limit in groups.values()),
        f"of {len(groups)} limited groups",
    )
    figures.add(
        "limit_violations",
        sum(overlap.starts_over_limit for overlap, _ in groups.values()),
        "claims",
    )
    figures.add("race_duration", time.monotonic() - started, "s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=10_000)
    parser.add_argument("--database-url", help="PostgreSQL, recreated; default: a new SQLite")
    args = parser.parse_args(argv)
    if args.database_url:
        recreate_postgres_database(args.database_url)
    figures = Figures()
    measure_race(figures, args.database_url, args.claims)
    violations = figures.values["limit_violations"]["value"]
    print(f"limit violations: {violations}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
