"""The fairness phase of `make bench`: does one user's load keep the others waiting?

Each scenario runs on a Stack of its own, the Procfile's job workers at `make run`'s defaults
(2 processes each), so that one scenario's leftovers cannot slow the next:

1. **Long jobs**: user A runs 4 `sleep` jobs of 60 s; B submits an `echo` job, and one
   scheduled 3 s ahead. B's wait (created → started) and lateness (started - scheduled).
2. **Weights**: two users with `fair_share_weight` 3 and 1, each with a deep backlog of short
   `sleep` jobs; each one's share of the jobs started over a steady window.
3. **A backlog**: A has 10,000 `sleep` jobs of 0.1 s queued; 20 other users submit one each,
   one every 0.5 s; their waits (created → started).
4. **The race** (scripts/bench_race.py): concurrency limits under colliding claims.

Figures are printed as `name: value unit (target ...)` as they are measured; `summarize`
prints them again by the issue's names once the whole bench has run, with A's end-to-end
rates alone (the bench's single and bulk phases) and, given a baseline, how they compare.

    python scripts/bench_fairness.py     # the phase on its own, on SQLite (--database-url)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import bench_race
from scripts.bench import BULK_LIMIT, Figures, as_datetime, submit_concurrently, wait_until
from scripts.stack import Api, Stack, connect_database, recreate_postgres_database

FAIR_ENV = {"MAX_ACTIVE_JOBS_PER_USER": "1000000", "JWT_ACCESS_MINUTES": "120"}
LONG_JOBS, LONG_SECONDS, SCHEDULED_AHEAD_SECONDS = 4, 60, 3
# How long B waits for its jobs before A's are cancelled to let them through: enough to
# show any figure up to its 1 s target, short enough not to hold up a run that misses it.
LONG_PATIENCE_SECONDS = 10.0
WEIGHTS = (3, 1)
WEIGHT_JOBS, WEIGHT_JOB_SECONDS = 1500, 0.05
WEIGHT_WARMUP_SECONDS, WEIGHT_WINDOW_SECONDS = 5.0, 20.0
BACKLOG_JOBS, BACKLOG_JOB_SECONDS = 10_000, 0.1
OTHER_USERS, OTHER_INTERVAL_SECONDS, OTHER_WINDOW_SECONDS = 20, 0.5, 50.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Target:
    """What the issue asks of a figure, and the figures shown beside it in the summary."""

    label: str
    bound: float
    at_most: bool = True
    details: tuple[str, ...] = ()

    def met(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound

    def describe(self, unit: str) -> str:
        relation = ("=" if self.bound == 0 else "≤") if self.at_most else "≥"
        return f"{relation} {self.bound:g} {unit}".rstrip()


# In the order, by the names.
TARGETS = {
    "fair_long_echo_wait": Target(
        "B's echo wait while A runs 4 x 60 s sleep jobs (make run defaults)", 1
    ),
    "fair_long_scheduled_lateness": Target(
        "Lateness of B's job scheduled 3 s ahead, same situation", 1
    ),
    "fair_backlog_wait_p99": Target(
        "Other users' waits (created → started) behind A's 10,000 queued sleep jobs, p99",
        0.5,
        details=("fair_backlog_wait_p50", "fair_backlog_wait_max", "fair_backlog_samples"),
    ),
    "single_end_to_end_rate_vs_baseline": Target(
        "A's end-to-end rate alone, single, of baseline",
        90,
        at_most=False,
        details=("single_end_to_end_rate", "single_vs_raw_vs_baseline"),
    ),
    "bulk_end_to_end_rate_vs_baseline": Target(
        "A's end-to-end rate alone, bulk, of baseline",
        90,
        at_most=False,
        details=("bulk_end_to_end_rate", "bulk_vs_raw_vs_baseline"),
    ),
    "fair_weights_deviation": Target(
        "Weights 3:1 between two saturating users, shares' deviation from 75/25",
        5,
        details=("fair_weights_3_share", "fair_weights_1_share"),
    ),
    "limit_violations": Target(
        "limit violations", 0, details=("race_claims", "race_worker_processes")
    ),
}


@dataclass
class User:
    email: str
    token: str
    api: Api


def sign_in_users(stack: Stack, count: int) -> list[User]:
    users = []
    for email, password in stack.create_verified_users(count):
        token = stack.login(email, password)
        users.append(User(email, token, Api(stack.base_url, token)))
    return users


@contextmanager
def fair_stack(database_url: str | None) -> Iterator[Stack]:
    """A Stack like `make run`'s, on a fresh database; its work dir goes with it."""
    if database_url:
        recreate_postgres_database(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fair-"))
    try:
        with Stack(workdir, database_url=database_url, web_workers=1, env=FAIR_ENV) as stack:
            yield stack
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def submit(user: User, body: dict[str, Any]) -> dict[str, Any]:
    status, job = user.api.request("POST", "/api/jobs/", body)
    if status != 201:
        raise RuntimeError(f"submission refused: {status} {job}")
    return job


def submit_in_bulk(stack: Stack, user: User, jobs: list[dict[str, Any]], clients: int) -> None:
    requests = [
        ("/api/jobs/bulk/", {"jobs": jobs[n : n + BULK_LIMIT]})
        for n in range(0, len(jobs), BULK_LIMIT)
    ]
    statuses = submit_concurrently(stack.base_url, user.token, requests, clients)[1]
    if any(status != 201 for status in statuses):
        raise RuntimeError(f"bulk submission refused: {sorted(set(statuses))}")


def sleep_jobs(count: int, seconds: float, label: str) -> list[dict[str, Any]]:
    return [
        {"name": f"{label} {n}", "job_type": "sleep", "parameters": {"seconds": seconds}}
        for n in range(count)
    ]


def seconds_between(later: str | datetime, earlier: str | datetime) -> float:
    return (parse_time(later) - parse_time(earlier)).total_seconds()


def parse_time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


# 1. Long jobs


def measure_long_jobs(figures: Figures, stack: Stack) -> None:
    """B's quick jobs while A's long ones fill the workers that run them."""
    a, b = sign_in_users(stack, 2)
    # One request each, as a user would submit them.
    long_jobs = [submit(a, body) for body in sleep_jobs(LONG_JOBS, LONG_SECONDS, "A long")]
    long_slots = sum(
        spec.concurrency for spec in stack.workers.values() if "long" in spec.queues.split(",")
    )
    wait_until(
        lambda: running(a, long_jobs) >= min(LONG_JOBS, long_slots), 30, "A's long jobs running"
    )
    scheduled_time = datetime.now(UTC) + timedelta(seconds=SCHEDULED_AHEAD_SECONDS)
    quick = submit(b, {"name": "B now", "job_type": "echo"})
    later = submit(
        b, {"name": "B later", "job_type": "echo", "scheduled_time": scheduled_time.isoformat()}
    )
    patience = time.monotonic() + SCHEDULED_AHEAD_SECONDS + LONG_PATIENCE_SECONDS
    b_jobs = wait_for_starts(b, [quick, later], patience)
    cancelled_first = not all(job["started_at"] for job in b_jobs)
    for job in long_jobs:
        a.api.request("POST", f"/api/jobs/{job['id']}/cancel/")
    if cancelled_first:
        print(f"  B's jobs had not started in {LONG_PATIENCE_SECONDS:g} s; A's were cancelled")
        b_jobs = wait_for_starts(b, b_jobs, time.monotonic() + 30)
    quick, later = b_jobs
    figures.add(
        "fair_long_echo_wait", seconds_between(quick["started_at"], quick["created_at"]), "s"
    )
    figures.add(
        "fair_long_scheduled_lateness",
        seconds_between(later["started_at"], later["scheduled_time"]),
        "s",
    )
    figures.add("fair_long_cancelled_a_first", int(cancelled_first), "")


def running(user: User, jobs: list[dict[str, Any]]) -> int:
    return sum(fetch(user, job)["status"] == "in_progress" for job in jobs)


def fetch(user: User, job: dict[str, Any]) -> dict[str, Any]:
    status, body = user.api.request("GET", f"/api/jobs/{job['id']}/")
    if status != 200:
        raise RuntimeError(f"reading job {job['id']}: {status} {body}")
    return body


def wait_for_starts(
    user: User, jobs: list[dict[str, Any]], deadline: float
) -> list[dict[str, Any]]:
    """Poll the jobs until each has started or the deadline passes; return them as last read."""
    while True:
        jobs = [fetch(user, job) if not job["started_at"] else job for job in jobs]
        if all(job["started_at"] for job in jobs) or time.monotonic() >= deadline:
            return jobs
        time.sleep(POLL_SECONDS)


# 2. Weights


def measure_weights(figures: Figures, stack: Stack) -> None:
    """Two saturating users weighted 3:1: each one's share of the jobs started."""
    users = sign_in_users(stack, len(WEIGHTS))
    connection = connect_database(stack.database_url)
    for user, weight in zip(users, WEIGHTS, strict=True):
        bench_race.set_user_fields(connection, user.email, fair_share_weight=weight)
    # Half of each backlog first, then the rest, so that neither user's jobs all come first.
    half = sleep_jobs(WEIGHT_JOBS // 2, WEIGHT_JOB_SECONDS, "weighted")
    for _ in range(2):
        for user in users:
            submit_in_bulk(stack, user, half, 2)
    starts = {user.email: [] for user in users}
    wait_until(lambda: started_times(connection, starts), 30, "the first weighted job")
    first = min(min(times) for times in starts.values() if times)
    window_start = first + timedelta(seconds=WEIGHT_WARMUP_SECONDS)
    window_end = window_start + timedelta(seconds=WEIGHT_WINDOW_SECONDS)
    time.sleep(max(0.0, (window_end - datetime.now(UTC)).total_seconds()) + 0.5)
    started_times(connection, starts)
    connection.close()
    counts = [sum(window_start <= t < window_end for t in starts[user.email]) for user in users]
    total = sum(counts) or 1
    shares = [100 * count / total for count in counts]
    expected = [100 * weight / sum(WEIGHTS) for weight in WEIGHTS]
    for weight, count, share in zip(WEIGHTS, counts, shares, strict=True):
        figures.add(f"fair_weights_{weight}_started", count, "jobs")
        figures.add(f"fair_weights_{weight}_share", share, "%")
    deviation = max(abs(share - e) for share, e in zip(shares, expected, strict=True))
    figures.add("fair_weights_deviation", deviation, "points")


STARTED_QUERY = """
SELECT u.email, j.started_at FROM jobs_job j JOIN users_customuser u ON u.id = j.owner_id
WHERE j.started_at IS NOT NULL
"""


def started_times(connection: bench_race.Connection, starts: dict[str, list[datetime]]) -> int:
    """Fill `starts` with the start times of the given users' jobs; return how many."""
    for times in starts.values():
        times.clear()
    for email, started_at in bench_race.query(connection, STARTED_QUERY):
        if email in starts:
            starts[email].append(as_datetime(started_at))
    return sum(map(len, starts.values()))


# 3. A backlog


def measure_backlog(figures: Figures, stack: Stack, window_seconds: float) -> None:
    """Other users' single jobs behind one user's deep backlog of the same type."""
    a, *others = sign_in_users(stack, 1 + OTHER_USERS)
    began = time.monotonic()
    submit_in_bulk(stack, a, sleep_jobs(BACKLOG_JOBS, BACKLOG_JOB_SECONDS, "A backlog"), 4)
    figures.add("fair_backlog_submit_time", time.monotonic() - began, "s")
    jobs: list[tuple[User, dict[str, Any]]] = []
    start = time.monotonic()
    samples = int(window_seconds / OTHER_INTERVAL_SECONDS)
    for n in range(samples):
        time.sleep(max(0.0, start + n * OTHER_INTERVAL_SECONDS - time.monotonic()))
        user = others[n % len(others)]
        jobs.append((user, submit(user, sleep_jobs(1, BACKLOG_JOB_SECONDS, f"other {n}")[0])))
    deadline = time.monotonic() + 5
    read = [wait_for_starts(user, [job], deadline)[0] for user, job in jobs]
    now = datetime.now(UTC)
    # A job that has not started by now has waited at least this long: a lower bound.
    waits = [seconds_between(job["started_at"] or now, job["created_at"]) for job in read]
    figures.add("fair_backlog_samples", len(waits), "jobs")
    figures.add("fair_backlog_not_started", sum(not job["started_at"] for job in read), "jobs")
    figures.percentiles("fair_backlog_wait", waits, "s")
    figures.add("fair_backlog_a_left", BACKLOG_JOBS - a_started(stack, a), "jobs")


def a_started(stack: Stack, a: User) -> int:
    connection = connect_database(stack.database_url)
    starts = {a.email: []}
    count = started_times(connection, starts)
    connection.close()
    return count


# The phase


def run_phase(
    figures: Figures, database_url: str | None, *, race_claims: int, backlog_seconds: float
) -> None:
    """Every scenario in turn, each on its own Stack (database_url is recreated for each)."""
    started = time.monotonic()
    # Long jobs and weights can share a Stack: A's long jobs are cancelled before the weights.
    with fair_stack(database_url) as stack:
        measure_long_jobs(figures, stack)
        measure_weights(figures, stack)
    # The backlog is left behind, thrown away with its Stack.
    with fair_stack(database_url) as stack:
        measure_backlog(figures, stack, backlog_seconds)
    if database_url:
        recreate_postgres_database(database_url)
    bench_race.measure_race(figures, database_url, race_claims)
    figures.add("fairness_duration", time.monotonic() - started, "s")


def compare_with_baseline(figures: Figures, baseline_path: Path) -> None:
    """Each end-to-end rate as a percentage of the same figure in an earlier run's JSON."""
    baseline = json.loads(baseline_path.read_text())["figures"]
    for name in ("single_end_to_end_rate", "bulk_end_to_end_rate", "single_vs_raw", "bulk_vs_raw"):
        if name in baseline and name in figures.values:
            ratio = figures.values[name]["value"] / baseline[name]["value"]
            figures.add(f"{name}_vs_baseline", 100 * ratio, "%")


# A figure is only a lower bound when the jobs it times had not started by themselves.
LOWER_BOUND_WHEN = {
    "fair_long_echo_wait": "fair_long_cancelled_a_first",
    "fair_long_scheduled_lateness": "fair_long_cancelled_a_first",
    "fair_backlog_wait_p99": "fair_backlog_not_started",
}


def summarize(figures: Figures) -> None:
    """Print the issue's figures by name, each with its target and whether it was met."""
    rows = [row for name, target in TARGETS.items() if (row := summary_row(figures, name, target))]
    if rows:
        print("\nfairness summary (issue 14)", *rows, sep="\n")


def summary_row(figures: Figures, name: str, target: Target) -> str | None:
    details = ", ".join(
        f"{detail} {figures.text(detail)}" for detail in target.details if detail in figures.values
    )
    if name not in figures.values:
        # The rates alone are measured on every run; only their comparison needs a baseline.
        return f"{target.label}: no --baseline given; {details}" if details else None
    value, unit = figures.values[name]["value"], figures.values[name]["unit"]
    lower_bound = figures.values.get(LOWER_BOUND_WHEN.get(name, ""), {}).get("value")
    verdict = "met" if target.met(value) else "MISSED"
    row = f"{target.label}: {'≥ ' if lower_bound else ''}{figures.text(name)}"
    row += f" (target {target.describe(unit)}) {verdict}"
    return f"{row}; {details}" if details else row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="PostgreSQL, recreated; default: a new SQLite")
    parser.add_argument("--race-claims", type=int, default=10_000)
    parser.add_argument("--backlog-seconds", type=float, default=OTHER_WINDOW_SECONDS)
    args = parser.parse_args(argv)
    figures = Figures()
    run_phase(
        figures,
        args.database_url,
        race_claims=args.race_claims,
        backlog_seconds=args.backlog_seconds,
    )
    summarize(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
