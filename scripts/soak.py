"""Run a mixed load for a long while, with faults every few minutes, and show what grows.

Starts the whole system as processes (scripts/stack.py), measures its capacity for quick jobs
in a short burst, then for --minutes runs clients at about half of it: submissions, polling
their jobs, listing, cancelling, logging in and refreshing tokens. Every --fault-minutes it
injects one fault of scripts/chaos_faults.py at random. At the start of the load, at minute
5 and at the end it prints, one `name: value unit` line each: the RSS and open file
descriptors of each process (with its children), the database's open connections, Redis's
memory and keys, and the jobs table's rows; and the p99 latency of each route over the first
and the last 5 minutes. Then it checks:

- RSS growth per process from minute 5 to the end: at most 10%;
- p99 submit latency, last 5 minutes against the first 5: at most 1.5x.

    python scripts/soak.py                     # 30 minutes, SQLite
    python scripts/soak.py --minutes 10 --postgres
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from scripts.chaos import CHAOS_ENV, LEASE_SECONDS
from scripts.chaos_faults import FAULTS, Chaos
from scripts.pgcluster import PrivateCluster
from scripts.stack import Api, Stack, children, connect_database

CLIENTS = 4
CALIBRATION_SECONDS = 20.0
WINDOW_SECONDS = 5 * 60
RSS_GROWTH_LIMIT = 0.10
P99_RATIO_LIMIT = 1.5
# What a client does next, by weight: about one submission in three requests.
ACTIONS = {"submit": 30, "poll": 35, "list": 20, "cancel": 5, "login": 5, "refresh": 5}


class Latencies:
    """Each request's route and latency, by when it started."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, str, float]] = []
        self.lock = threading.Lock()

    def add(self, at: float, route: str, seconds: float) -> None:
        with self.lock:
            self.samples.append((at, route, seconds))

    def p99(self, start: float, end: float) -> dict[str, float]:
        by_route: dict[str, list[float]] = defaultdict(list)
        with self.lock:
            for at, route, seconds in self.samples:
                if start <= at < end:
                    by_route[route].append(seconds)
        return {route: sorted(v)[int(0.99 * (len(v) - 1))] for route, v in by_route.items()}


class Client:
    """One user's client: a paced loop of the API calls a real one makes."""

    def __init__(self, stack: Stack, user: tuple[str, str], latencies: Latencies) -> None:
        self.stack, self.email, self.password = stack, *user
        self.latencies = latencies
        self.rng = random.Random()  # noqa: S311 - a load mix, not a secret.
        self.jobs: list[str] = []
        self.access, self.refresh = "", ""
        self.login()

    def call(self, route: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        api = Api(self.stack.base_url, self.access or None)
        started = time.monotonic()
        try:
            status, data = api.request(method, path, body, {"Idempotency-Key": str(uuid.uuid4())})
        except OSError:
            status, data = 0, None
        finally:
            api.close()
        self.latencies.add(started, route, time.monotonic() - started)
        return status, data

    def login(self) -> None:
        self.access = ""
        status, data = self.call(
            "login", "POST", "/api/login/", {"email": self.email, "password": self.password}
        )
        if status == 200:
            self.access, self.refresh = data["access"], data["refresh"]

    def act(self) -> None:
        action = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        if action == "submit" or not self.jobs:
            job_type = self.rng.choices(["echo", "word_count", "sleep"], weights=[60, 35, 5])[0]
            parameters = {
                "echo": {"message": "soak"},
                "word_count": {"text": "the quick brown fox " * 20},
                "sleep": {"seconds": 1},
            }[job_type]
            body = {"name": "soak", "job_type": job_type, "parameters": parameters}
            status, data = self.call("submit", "POST", "/api/jobs/", body)
            if status == 201:
                self.jobs = [*self.jobs[-49:], data["id"]]
        elif action == "poll":
            self.call("poll", "GET", f"/api/jobs/{self.rng.choice(self.jobs)}/")
        elif action == "list":
            self.call("list", "GET", "/api/jobs/?page_size=20")
        elif action == "cancel":
            self.call("cancel", "POST", f"/api/jobs/{self.rng.choice(self.jobs)}/cancel/")
        elif action == "login":
            self.login()
        else:
            status, data = self.call(
                "refresh", "POST", "/api/token/refresh/", {"refresh": self.refresh}
            )
            if status == 200:
                self.access, self.refresh = data["access"], data.get("refresh", self.refresh)


def calibrate(stack: Stack, users: list[tuple[str, str]]) -> float:
    """Quick jobs completed per second with every client submitting flat out."""
    connection = connect_database(stack.database_url)
    done_before = completed(connection)
    stop = time.monotonic() + CALIBRATION_SECONDS

    def flat_out(user: tuple[str, str]) -> None:
        client = Client(stack, user, Latencies())
        while time.monotonic() < stop:
            body = {"name": "calibrate", "job_type": "echo", "parameters": {"message": "x"}}
            client.call("submit", "POST", "/api/jobs/", body)

    threads = [threading.Thread(target=flat_out, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = (completed(connection) - done_before) / CALIBRATION_SECONDS
    connection.close()
    return rate


def completed(connection: Any) -> int:
    return connection.execute(
        "SELECT COUNT(*) FROM jobs_job WHERE status = 'completed'"
    ).fetchone()[0]


# What grows


def process_figures(stack: Stack) -> dict[str, tuple[int, int]]:
    """Each process's RSS in kB and open file descriptors, its children's included."""
    figures = {}
    for name, process in stack.processes.items():
        if not process.alive:
            continue
        pids = [process.process.pid]
        for pid in list(pids):
            pids += children(pid)
            for child in children(pid):
                pids += children(child)
        rss = fds = 0
        for pid in set(pids):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rss += int(
                    next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]
                )
                fds += len(list(Path(f"/proc/{pid}/fd").iterdir()))
            except (FileNotFoundError, StopIteration, ProcessLookupError):
                continue
        figures[name] = (rss, fds)
    return figures


def database_connections(stack: Stack, cluster: PrivateCluster | None) -> int:
    """Open connections to the database: sessions on PostgreSQL, open files on SQLite."""
    if cluster is not None:
        connection = connect_database(stack.database_url)
        count = connection.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone()[0]
        connection.close()
        return count - 1  # Not this one.
    database = stack.database_url.removeprefix("sqlite:///")
    count = 0
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            count += str(fd.readlink()) == database
        except OSError:
            continue
    return count


def snapshot(stack: Stack, cluster: PrivateCluster | None, label: str) -> dict[str, Any]:
    connection = connect_database(stack.database_url)
    jobs = connection.execute("SELECT COUNT(*) FROM jobs_job").fetchone()[0]
    connection.close()
    client = redis.Redis.from_url(stack.redis_url)
    memory = client.info("memory")["used_memory"]
    figures = {
        "processes": process_figures(stack),
        "database_connections": database_connections(stack, cluster),
        "redis_memory": memory,
        "redis_keys": client.dbsize(),
        "jobs": jobs,
    }
    for name, (rss, fds) in sorted(figures["processes"].items()):
        print(f"{label}_rss_{name}: {rss} kB")
        print(f"{label}_fds_{name}: {fds} descriptors")
    print(f"{label}_database_connections: {figures['database_connections']} connections")
    print(f"{label}_redis_memory: {memory} bytes")
    print(f"{label}_redis_keys: {figures['redis_keys']} keys")
    print(f"{label}_jobs_table: {jobs} rows")
    return figures


def run_load(
    stack: Stack, users: list, minutes: float, rate: float, chaos: Chaos, fault_every: float
) -> Latencies:
    """Clients at `rate` requests a second in all until the time is up; a fault now and then."""
    latencies = Latencies()
    stop = time.monotonic() + minutes * 60
    pause = len(users) / rate

    def run_client(user: tuple[str, str]) -> None:
        client = Client(stack, user, latencies)
        while time.monotonic() < stop:
            started = time.monotonic()
            client.act()
            time.sleep(max(0.0, pause - (time.monotonic() - started)))

    threads = [threading.Thread(target=run_client, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    # Faults on this thread: it outlives the processes the Stack restarts (stack.py).
    next_fault = time.monotonic() + fault_every
    while any(thread.is_alive() for thread in threads):
        if fault_every and time.monotonic() >= next_fault and time.monotonic() < stop - 60:
            chaos.run([chaos.rng.choice(FAULTS)], stop)
            next_fault = time.monotonic() + fault_every
        chaos.restart_exited_workers()
        time.sleep(1)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-minutes", type=float, default=3.0, help="0: no faults")
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL server")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    with PrivateCluster() if args.postgres else nullcontext() as cluster:
        database_url = cluster.create_database("soak") if cluster else None
        with Stack(workdir, database_url=database_url, env=CHAOS_ENV) as stack:
            users = stack.create_verified_users(CLIENTS)
            capacity = calibrate(stack, users)
            # Requests a second: a third of them submissions, at half the jobs' capacity.
            rate = max(1.0, capacity / 2 * sum(ACTIONS.values()) / ACTIONS["submit"])
            print(f"capacity: {capacity:.1f} quick jobs/s")
            print(f"load: {rate:.1f} requests/s")
            started = time.monotonic()
            chaos = Chaos(stack, started=started, lease_seconds=LEASE_SECONDS, cluster=cluster)
            minute5: dict[str, Any] = {}

            def take_minute5() -> None:
                time.sleep(min(WINDOW_SECONDS, args.minutes * 30))
                minute5.update(snapshot(stack, cluster, "minute5"))

            snapshot(stack, cluster, "start")
            sampler = threading.Thread(target=take_minute5)
            sampler.start()
            latencies = run_load(stack, users, args.minutes, rate, chaos, args.fault_minutes * 60)
            sampler.join()
            end = snapshot(stack, cluster, "end")
    elapsed = time.monotonic() - started
    first = latencies.p99(started, started + WINDOW_SECONDS)
    last = latencies.p99(started + elapsed - WINDOW_SECONDS, started + elapsed)
    for route in sorted(first):
        print(f"p99_first5_{route}: {first[route] * 1000:.0f} ms")
        print(f"p99_last5_{route}: {last.get(route, 0) * 1000:.0f} ms")
    for route, count in sorted(Counter(route for _at, route, _s in latencies.samples).items()):
        print(f"requests_{route}: {count} requests ({count / elapsed:.1f}/s)")
    print(f"faults: {dict(chaos.done)}")
    problems = []
    for name, (rss, _fds) in end["processes"].items():
        before = minute5["processes"].get(name, (0, 0))[0]
        growth = (rss - before) / before if before else 0.0
        print(f"rss_growth_{name}: {growth * 100:.1f} %")
        if growth > RSS_GROWTH_LIMIT:
            problems.append(f"rss_growth_{name}")
    ratio = last.get("submit", 0) / first["submit"] if first.get("submit") else 0.0
    print(f"p99_submit_ratio: {ratio:.2f} x")
    if ratio > P99_RATIO_LIMIT:
        problems.append("p99_submit_ratio")
    print(f"result: {'FAILED: ' + ', '.join(problems) if problems else 'ok'}")
    if problems:
        print(f"logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
