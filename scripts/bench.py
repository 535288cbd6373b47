"""Benchmark the service against raw Celery, side by side, on real processes on 127.0.0.1.

One run measures, in this order: raw Celery's no-op rate (the limit), single submissions,
bulk submissions, raw Celery's rate again (the ratios divide by the mean of the two),
submit→start latency at half the single end-to-end rate, scheduling accuracy, list reads at
1k and 1M rows, and peak memory of a web and a worker process; then the fairness phase
(scripts/bench_fairness.py) on Stacks of its own. Every figure is printed as `name: value unit`
and written to a JSON file with the machine's core count and the versions used; the fairness
summary at the end repeats issue 14's figures beside their targets.

    python scripts/bench.py              # `make bench`: PostgreSQL, N=5,000, C=16, 1M rows
    python scripts/bench.py --quick      # a smaller, faster run
    python scripts/bench.py --sqlite     # the embedded database instead
    python scripts/bench.py --baseline old.json   # rates as a share of an earlier run's

PostgreSQL is BENCH_DATABASE_URL (default: the local server's `jobsystem_bench` database,
dropped and created afresh by every run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import bench_reads
from scripts.stack import (
    Api,
    ManagedProcess,
    Stack,
    connect_database,
    recreate_postgres_database,
)

DRAIN_TIMEOUT_SECONDS = 180.0
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/jobsystem_bench"
BULK_LIMIT = 500


class Figures:
    """Collect `name: value unit` lines, printing each as it is measured."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    def add(self, name: str, value: float | int | str, unit: str = "") -> None:
        self.values[name] = {"value": value, "unit": unit}
        print(f"{name}: {self.text(name)}", flush=True)

    def text(self, name: str) -> str:
        """A figure as `value unit`, to three decimals at most."""
        value, unit = self.values[name]["value"], self.values[name]["unit"]
        shown = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else value
        return f"{shown} {unit}".rstrip()

    def percentiles(self, name: str, samples: Iterable[float], unit: str = "ms") -> None:
        ordered = sorted(samples)
        if not ordered:
            self.add(f"{name}_count", 0, "samples")
            return
        for label, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            self.add(f"{name}_{label}", ordered[min(len(ordered) - 1, int(q * len(ordered)))], unit)
        self.add(f"{name}_max", ordered[-1], unit)


# Raw Celery: the limit


def raw_celery_rate(stack: Stack, tasks: int, concurrency: int) -> float:
    """Publish `tasks` no-op tasks from this process to a raw Celery worker; tasks/s end to end."""
    os.environ["REDIS_URL"] = stack.redis_url
    from scripts import bench_celery

    worker = ManagedProcess(
        "raw-celery",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "scripts.bench_celery",
            "worker",
            f"--queues={bench_celery.QUEUE}",
            f"--concurrency={concurrency}",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        stack.env(),
        stack.workdir / "raw-celery.log",
    ).start()
    try:
        wait_until(lambda: bench_celery.app.control.ping(timeout=0.5), 30, "raw worker up")
        bench_celery.counter.delete(bench_celery.DONE_KEY)
        started = time.perf_counter()
        with bench_celery.app.producer_or_acquire() as producer:
            for _ in range(tasks):
                bench_celery.noop.apply_async(producer=producer)
        wait_until(
            lambda: int(bench_celery.counter.get(bench_celery.DONE_KEY) or 0) >= tasks,
            DRAIN_TIMEOUT_SECONDS,
            "raw tasks done",
        )
        return tasks / (time.perf_counter() - started)
    finally:
        worker.stop()


# Submitting jobs


def submit_concurrently(
    base_url: str, token: str, requests: list[tuple[str, Any]], clients: int
) -> tuple[list[float], list[int], float, float]:
    """POST each (path, body) from `clients` threads; return latencies, statuses and times."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    shares = [requests[n::clients] for n in range(clients)]

    def client(share: list[tuple[str, Any]]) -> None:
        api = Api(base_url, token)
        for path, body in share:
            began = time.perf_counter()
            status, _ = api.request("POST", path, body)
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)
                statuses.append(status)
        api.close()

    first = time.time()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, shares))
    return latencies, statuses, time.perf_counter() - started, first


def echo_jobs(count: int, label: str) -> list[dict[str, Any]]:
    return [{"name": f"{label} {n}", "job_type": "echo"} for n in range(count)]


def measure_submissions(
    figures: Figures,
    stack: Stack,
    token: str,
    label: str,
    requests: list[tuple[str, Any]],
    jobs: int,
    clients: int,
) -> float:
    """Submit, wait for every job, and record rates and latencies; return jobs/s end to end."""
    db = connect_database(stack.database_url)
    since = datetime.now(UTC)
    latencies, statuses, elapsed, first_submit = submit_concurrently(
        stack.base_url, token, requests, clients
    )
    rejected = [status for status in statuses if status not in (200, 201)]
    figures.add(f"{label}_requests", len(requests), "requests")
    figures.add(f"{label}_rejected", len(rejected), "requests")
    if rejected:
        raise RuntimeError(f"{label}: {len(rejected)} requests refused, e.g. {rejected[:5]}")
    figures.add(f"{label}_submit_rate", len(requests) / elapsed, "requests/s")
    figures.add(f"{label}_submit_jobs_rate", jobs / elapsed, "jobs/s")
    figures.percentiles(f"{label}_request_latency", latencies)
    rows = wait_for_jobs(db, since, jobs)
    last_completed = max(row["completed_at"] for row in rows)
    end_to_end = jobs / (last_completed.timestamp() - first_submit)
    figures.add(f"{label}_end_to_end_rate", end_to_end, "jobs/s")
    figures.percentiles(
        f"{label}_submit_to_started", (ms(r["started_at"] - r["created_at"]) for r in rows)
    )
    figures.percentiles(
        f"{label}_submit_to_completed", (ms(r["completed_at"] - r["created_at"]) for r in rows)
    )
    db.close()
    return end_to_end


def measure_paced_latency(
    figures: Figures, stack: Stack, token: str, rate: float, seconds: float
) -> None:
    """Submit at a steady `rate` (open loop) and record submit→started latency."""
    db = connect_database(stack.database_url)
    since = datetime.now(UTC)
    jobs = max(1, int(rate * seconds))
    interval = 1 / rate
    clients = 8
    start = time.perf_counter() + 0.5

    def client(index: int) -> None:
        api = Api(stack.base_url, token)
        for n in range(index, jobs, clients):
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            api.request("POST", "/api/jobs/", {"name": f"paced {n}"})
        api.close()

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    rows = wait_for_jobs(db, since, jobs)
    figures.add("paced_rate", rate, "jobs/s")
    figures.percentiles(
        "paced_submit_to_started", (ms(r["started_at"] - r["created_at"]) for r in rows)
    )
    db.close()


def measure_scheduling(figures: Figures, stack: Stack, token: str, jobs: int) -> None:
    """Schedule jobs 2-10 s ahead and record how late (or early) each one started."""
    db = connect_database(stack.database_url)
    since = datetime.now(UTC)
    now = datetime.now(UTC)
    bodies = [
        {
            "name": f"scheduled {n}",
            "scheduled_time": (now + timedelta(seconds=2 + 8 * n / jobs)).isoformat(),
        }
        for n in range(jobs)
    ]
    submit_concurrently(stack.base_url, token, [("/api/jobs/", b) for b in bodies], 8)
    rows = wait_for_jobs(db, since, jobs, timeout=60)
    lateness = [ms(r["started_at"] - r["scheduled_time"]) for r in rows]
    figures.percentiles("schedule_lateness", lateness)
    figures.add("schedule_started_early", sum(1 for value in lateness if value < 0), "jobs")
    db.close()


# Reading the database


def wait_for_jobs(db, since: datetime, expected: int, timeout: float = DRAIN_TIMEOUT_SECONDS):
    """Wait until `expected` jobs created after `since` are completed; return their times."""
    query = (
        "SELECT created_at, started_at, completed_at, scheduled_time FROM jobs_job "
        "WHERE created_at >= %s AND status = 'completed'"
    )
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = fetch_times(db, query, since)
        if len(rows) >= expected:
            return rows
        time.sleep(0.25)
    raise RuntimeError(f"only {len(rows)} of {expected} jobs completed in {timeout:.0f}s")


def fetch_times(db, query: str, since: datetime) -> list[dict[str, Any]]:
    sqlite = db.__class__.__module__.startswith("sqlite3")
    if sqlite:
        query = query.replace("%s", "?")
        raw = db.execute(query, (since.strftime("%Y-%m-%d %H:%M:%S.%f"),)).fetchall()
    else:
        raw = db.execute(query, (since,)).fetchall()
    names = ("created_at", "started_at", "completed_at", "scheduled_time")
    return [dict(zip(names, map(as_datetime, row), strict=True)) for row in raw]


def as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# Memory


class PeakMemory(threading.Thread):
    """Sample the resident memory of every process under the given ones, keeping the peaks."""

    def __init__(self, groups: dict[str, ManagedProcess]) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peaks: dict[str, int] = dict.fromkeys(groups, 0)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            for name, process in self.groups.items():
                if process.alive:
                    for pid in descendants(process.process.pid):
                        self.peaks[name] = max(self.peaks[name], rss_bytes(pid))


def descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# The run


def versions(stack: Stack) -> dict[str, str]:
    import celery
    import django
    import kombu
    import redis

    server = redis.Redis.from_url(stack.redis_url).info("server")["redis_version"]
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_server": server,
        "database": stack.database_url.split(":", 1)[0],
    }


def run(args: argparse.Namespace, figures: Figures) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {
        "WEB_CONCURRENCY": str(args.web_workers),
        "MAX_ACTIVE_JOBS_PER_USER": "1000000",
        "JWT_ACCESS_MINUTES": "120",
    }
    with Stack(
        workdir,
        database_url=args.database_url,
        web_workers=args.web_workers,
        web_threads=args.web_threads,
        worker_concurrency=args.worker_concurrency,
        env=env,
    ) as stack:
        memory = PeakMemory({"web": stack.processes["web"], "worker": stack.processes["worker1"]})
        memory.start()
        token = stack.login(*stack.create_verified_user())
        figures.add("cores", os.cpu_count() or 0, "cores")
        figures.add("jobs", args.jobs, "jobs")
        figures.add("clients", args.clients, "clients")

        raw_before = raw_celery_rate(stack, args.jobs, args.worker_concurrency)
        figures.add("raw_celery_rate_before", raw_before, "tasks/s")

        singles = [("/api/jobs/", body) for body in echo_jobs(args.jobs, "single")]
        single = measure_submissions(
            figures, stack, token, "single", singles, args.jobs, args.clients
        )

        chunks = echo_jobs(args.jobs, "bulk")
        bulks = [
            ("/api/jobs/bulk/", {"jobs": chunks[n : n + args.bulk_size]})
            for n in range(0, args.jobs, args.bulk_size)
        ]
        bulk = measure_submissions(
            figures, stack, token, "bulk", bulks, args.jobs, min(args.clients, len(bulks))
        )
        # The limit is taken before and after the submissions it is compared with: a machine
        # whose speed drifts during the run (this one moves by a fifth within minutes) then
        # biases neither ratio.
        raw_after = raw_celery_rate(stack, args.jobs, args.worker_concurrency)
        figures.add("raw_celery_rate_after", raw_after, "tasks/s")
        raw = (raw_before + raw_after) / 2
        figures.add("raw_celery_rate", raw, "tasks/s")
        figures.add("single_vs_raw", single / raw, "x")
        figures.add("bulk_vs_raw", bulk / raw, "x")

        measure_paced_latency(figures, stack, token, single / 2, args.paced_seconds)
        measure_scheduling(figures, stack, token, args.scheduled)
        if not args.skip_reads:
            bench_reads.measure(figures, stack, token, args.large_rows)

        memory.stopped.set()
        memory.join()
        figures.add("web_worker_peak_rss", memory.peaks["web"] / 2**20, "MB")
        figures.add("celery_worker_peak_rss", memory.peaks["worker"] / 2**20, "MB")
        meta = versions(stack)
    shutil.rmtree(workdir, ignore_errors=True)
    return meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--bulk-size", type=int, default=BULK_LIMIT)
    parser.add_argument(
        "--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 1))
    )
    parser.add_argument("--web-threads", type=int, default=int(os.environ.get("WEB_THREADS", 8)))
    parser.add_argument(
        "--worker-concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", 4))
    )
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--scheduled", type=int, default=200)
    parser.add_argument("--large-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="a PostgreSQL database to drop and create afresh (default: %(default)s)",
    )
    parser.add_argument("--sqlite", action="store_true", help="use a fresh SQLite file instead")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--baseline",
        type=Path,
        help="an earlier run's --json file: print each end-to-end rate as a share of its own",
    )
    parser.add_argument("--skip-fairness", action="store_true")
    parser.add_argument("--race-claims", type=int, default=10_000)
    parser.add_argument("--backlog-seconds", type=float, default=50.0)
    parser.add_argument(
        "--quick", action="store_true", help="1,000 jobs, 100k rows for reads, a smaller fairness"
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.large_rows, args.scheduled, args.paced_seconds = 1000, 100_000, 50, 5
        args.race_claims, args.backlog_seconds = 2000, 25.0
    if args.sqlite:
        args.database_url = None
    else:
        try:
            recreate_postgres_database(args.database_url)
        except (OSError, subprocess.CalledProcessError) as exc:
            parser.exit(
                2,
                f"bench: cannot reach PostgreSQL at {args.database_url} ({exc});\n"
                "set BENCH_DATABASE_URL, or pass --sqlite.\n",
            )

    # Imported here: it builds on this module's helpers.
    from scripts import bench_fairness

    figures = Figures()
    started = time.monotonic()
    meta = run(args, figures)
    if args.baseline:
        bench_fairness.compare_with_baseline(figures, args.baseline)
    if not args.skip_fairness:
        # Its own database beside the bench's, recreated for each of its Stacks.
        fairness_url = args.database_url and f"{args.database_url}_fairness"
        bench_fairness.run_phase(
            figures,
            fairness_url,
            race_claims=args.race_claims,
            backlog_seconds=args.backlog_seconds,
        )
    figures.add("bench_duration", time.monotonic() - started, "s")
    bench_fairness.summarize(figures)
    report = {"machine": {"cores": os.cpu_count()}, "versions": meta, "figures": figures.values}
    args.json.write_text(json.dumps(report, indent=2))
    print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
