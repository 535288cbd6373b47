"""Pruning a million expired jobs from a two-million-row table while single submissions run.

PostgreSQL only, on real processes on 127.0.0.1 (scripts/stack.py). One run:
1. builds the table straight in SQL (generate_series, not the ORM): JOBS jobs over 50 owners,
   half of them expired, each with its result, its attempt and two events (job.pending and
   job.completed), then VACUUM ANALYZE;
2. times single submissions over HTTP at a steady rate (CLIENTS clients, each RATE a second)
   through windows of WINDOW seconds that alternate, idle then pruning, and end idle: in a
   pruning window the pruner (a process of its own) runs Beat's task as Beat does, one run
   every JOB_PRUNE_INTERVAL_SECONDS (--back-to-back: each as the last one ends); in an idle
   window it does nothing. Windows of both kinds interleave through one run, so a drift of
   the machine's speed weighs on both sides alike, and each side's samples are pooled for its
   p50 and p99. The run ends after --prune-window seconds of pruning windows, or once nothing
   is expired;
3. meanwhile samples pg_stat_activity every 50 ms for backends waiting on a lock.

The pruner process times each of its statements, its COMMITs among them, and each of its
batches (a batch's transaction holds its row locks; the batch's time bounds it), and reports
its peak RSS (VmHWM) beside its RSS before it began. The clients renew their access token
as it nears its end, so a run may last longer than JWT_ACCESS_MINUTES. Figures are printed
as `name: value unit`.

    python scripts/bench_prune.py                 # `make bench-prune`: 2M jobs, 1M expired
    python scripts/bench_prune.py --jobs 200000   # a quicker run
    python scripts/bench_prune.py --prune-window inf   # prune all 1M (about five hours)
    python scripts/bench_prune.py --back-to-back  # the pruner's busiest

PostgreSQL is BENCH_PRUNE_DATABASE_URL (default: the local server's `jobsystem_bench_prune`,
dropped and created afresh by every run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench import Figures
from scripts.stack import (
    Api,
    RenewedToken,
    Stack,
    connect_database,
    recreate_postgres_database,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/jobsystem_bench_prune"
OWNERS = 50
SEED_CHUNK = 250_000
LOCK_SAMPLE_SECONDS = 0.05

# One chunk of jobs numbered first..last, with their rows in the other tables. Job n is owned
# by owners[n % len(owners)]; its events are that owner's numbers 2k+1 and 2k+2, k = n div
# len(owners), so each owner's numbering has no gaps. Jobs up to `expired` expired a day or
# more ago; the others expire in ten days or more.
SEED_SQL = """
WITH n AS (
    SELECT g AS n, md5('job' || g)::uuid AS id,
           (%(owners)s::int[])[1 + g %% cardinality(%(owners)s::int[])] AS owner_id,
           CASE WHEN g <= %(expired)s::int
                THEN now() - interval '1 day' - (g %% 10000) * interval '1 second'
                ELSE now() + interval '10 days' + (g %% 10000) * interval '1 second'
           END AS expires_at
    FROM generate_series(%(first)s::int, %(last)s::int) AS g
), jobs AS (
    INSERT INTO jobs_job (id, owner_id, name, description, job_type, queue, priority,
        parameters, status, progress, attempts, run, run_attempts, max_retries,
        timeout_seconds, error_message, created_at, updated_at, started_at, completed_at,
        run_after, enqueued_at, worker, error_traceback, idempotency_key,
        request_fingerprint, batch_position, expires_at)
    SELECT id, owner_id, 'seeded ' || n, '', 'echo', 'default', 5,
        '{"message": "hello", "data": null}', 'completed', 100, 1, 1, 1, 3, 60, '',
        expires_at - interval '30 days' - interval '1 second', expires_at - interval '30 days',
        expires_at - interval '30 days' - interval '1 second', expires_at - interval '30 days',
        expires_at - interval '30 days' - interval '1 second', NULL, 'seed@host', '', '', '',
        0, expires_at
    FROM n
), results AS (
    INSERT INTO jobs_jobresult (job_id, output, output_bytes, completed_at, duration_ms)
    SELECT id, '{"message": "hello", "data": null}', 33, expires_at - interval '30 days', 1
    FROM n
), attempts AS (
    INSERT INTO jobs_jobattempt (job_id, number, run, claim_token, worker, started_at,
        finished_at, outcome, error_message)
    SELECT id, 1, 1, md5('claim' || n)::uuid, 'seed@host',
        expires_at - interval '30 days' - interval '1 second', expires_at - interval '30 days',
        'succeeded', ''
    FROM n
)
INSERT INTO events_event (owner_id, seq, type, job_id, status, attempt, progress,
    waiting_for, created_at)
SELECT owner_id, 2 * (n / cardinality(%(owners)s::int[])) + e.k, e.type, id, e.status,
    e.k - 1, 100 * (e.k - 1), '', expires_at - interval '30 days'
FROM n, (VALUES (1, 'job.pending', 'pending'), (2, 'job.completed', 'completed'))
    AS e(k, type, status)
"""

# Each owner's stream, numbered as far as its seeded events go.
STREAMS_SQL = """
INSERT INTO events_eventstream (owner_id, last_seq, pruned_through, fanned_out_seq)
SELECT owner_id, max(seq), 0, max(seq) FROM events_event GROUP BY owner_id
ON CONFLICT (owner_id) DO UPDATE SET last_seq = excluded.last_seq,
    fanned_out_seq = excluded.fanned_out_seq
"""

# Backends of this database waiting for a lock: how long their statement has run, what it
# is, and what the first backend it waits for is running.
LOCK_WAITS_SQL = """
SELECT extract(epoch FROM now() - w.query_start) * 1000, left(w.query, 60),
       (SELECT left(b.query, 60) FROM pg_stat_activity b
        WHERE b.pid = (pg_blocking_pids(w.pid))[1])
FROM pg_stat_activity w
WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
"""

# What the pruner's backend is doing while it runs a statement: on a CPU (no wait event), or
# waiting, and for what (IO:WALWrite, LWLock:WALWrite, IO:DataFileRead...).
PRUNER_BACKEND_SQL = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
WHERE application_name = 'bench-pruner' AND state = 'active'
"""

# WAL written and checkpoints so far, server-wide.
WAL_AND_CHECKPOINTS_SQL = """
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, checkpoints_timed, checkpoints_req,
       checkpoint_sync_time FROM pg_stat_bgwriter
"""

# Runs in the pruner's own process: the pruner as Beat's task runs it, timed. Every statement
# is timed, and the COMMITs too (which run whatever checks were deferred to them, holding the
# transaction's locks); a statement holds row locks if it writes, locks (FOR UPDATE) or
# commits.
PRUNER = """
import json, time
from django.db import connection
from jobs.services import pruning
from jobs.tasks import prune_expired_jobs

def rss_mb(field):
    status = open("/proc/self/status").read()
    return int(status.split(field + ":")[1].split()[0]) / 1024

# Totals only, kept as it goes: a list of every statement would add to the RSS it reports.
# The locking statements' durations in whole milliseconds, for their percentiles.
count, slowest, slowest_locking, by_kind, transactions = 0, (0.0, ""), (0.0, ""), {}, []
locking_ms = [0] * 1001

# Statements over 100 ms, with the window they ran in and when: to set them beside the
# checkpoints and the other window kind's p99s.
slow, window_name, started = [], "idle 0", time.perf_counter()

def record(ms, sql):
    global count, slowest, slowest_locking
    count += 1
    slowest = max(slowest, (ms, sql[:60]))
    if ms > 100 and len(slow) < 20:
        slow.append(f"{ms:.0f} ms in {window_name} at {time.perf_counter() - started:.0f} s: "
                    + sql[:50])
    words = sql.lstrip().split(None, 1)
    if words[0] in ("UPDATE", "DELETE", "INSERT", "COMMIT") or "FOR UPDATE" in sql:
        slowest_locking = max(slowest_locking, (ms, sql[:60]))
        locking_ms[min(int(ms), 1000)] += 1
    by_kind[sql[:60]] = by_kind.get(sql[:60], 0) + ms

def locking_percentile(q):
    rank, seen = q * sum(locking_ms), 0
    for ms, n in enumerate(locking_ms):
        seen += n
        if seen > rank:
            return ms
    return 1000

def timed(execute, sql, params, many, context):
    began = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        record((time.perf_counter() - began) * 1000, sql)

commit = connection._commit

def timed_commit():
    began = time.perf_counter()
    try:
        return commit()
    finally:
        record((time.perf_counter() - began) * 1000, "COMMIT")

batch = pruning._prune_batch

def timed_batch(*args, **kwargs):
    began = time.perf_counter()
    try:
        return batch(*args, **kwargs)
    finally:
        transactions.append((time.perf_counter() - began) * 1000)

pruning._prune_batch = timed_batch
connection._commit = timed_commit
connection.ensure_connection()
# The server's own time for statements over 100 ms (auto_explain, sent back as notices), to
# tell a slow statement from a client or a backend that waited for a CPU.
server_slow, server_slow_count = [], 0

def server_notice(notice):
    global server_slow_count
    server_slow_count += 1
    if len(server_slow) < 20:
        server_slow.append(notice.message_primary[:160])

connection.connection.add_notice_handler(server_notice)
with connection.cursor() as cursor:
    for statement in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 100",
                      "SET client_min_messages = log", "SET application_name = 'bench-pruner'"):
        cursor.execute(statement)
rss_before = rss_mb("VmRSS")

def phase(name):
    # Read by the bench, which tags each submission with the window it was sent in.
    global window_name
    window_name = name
    print("PHASE " + name, flush=True)

# Idle and pruning windows of WINDOW seconds in turn, idle first and last. In a pruning
# window, Beat's runs, each within JOB_PRUNE_RUN_SECONDS, one starting every INTERVAL seconds
# as Beat starts them (0: back to back, the pruner's busiest). Windows go on until PRUNING
# seconds of them have passed, or nothing is left.
counts, runs, elapsed, window, done = {"stamped": 0, "deleted": 0}, 0, 0.0, 0, False
phase("idle 0")
time.sleep(WINDOW)
with connection.execute_wrapper(timed):
    while not done and elapsed < PRUNING:
        window += 1
        phase(f"pruning {window}")
        began = time.perf_counter()
        ends = began + WINDOW
        while time.perf_counter() < ends:
            run_began = time.perf_counter()
            ran = prune_expired_jobs()
            runs += 1
            counts = {name: counts[name] + ran[name] for name in counts}
            if not any(ran.values()):
                done = True
                break
            next_run = min(run_began + INTERVAL, ends)
            time.sleep(max(0.0, next_run - time.perf_counter()))
        elapsed += time.perf_counter() - began
        phase(f"idle {window}")
        time.sleep(WINDOW)
transactions.sort()
print("RESULT" + json.dumps({
    "counts": counts, "runs": runs, "seconds": elapsed, "windows": window,
    "peak_rss_mb": rss_mb("VmHWM"), "rss_before_mb": rss_before,
    "statements": count, "slowest_statement_ms": slowest[0],
    "slowest_statement": slowest[1], "slowest_locking_ms": slowest_locking[0],
    "slowest_locking": slowest_locking[1], "locking_statements": sum(locking_ms),
    "locking_over_100ms": sum(locking_ms[101:]),
    "locking_p99_ms": locking_percentile(0.99), "locking_p999_ms": locking_percentile(0.999),
    "transactions": len(transactions),
    "slowest_transaction_ms": transactions[-1],
    "transaction_p99_ms": transactions[int(0.99 * len(transactions))],
    "time_by_statement": sorted(by_kind.items(), key=lambda kv: -kv[1])[:8],
    "server_slow": server_slow, "server_slow_count": server_slow_count, "slow": slow,
}))
"""

BEAT_INTERVAL = """
from django.conf import settings
print(settings.CELERY_BEAT_SCHEDULE["prune-expired-jobs"]["schedule"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=2_000_000, help="rows in the jobs table")
    parser.add_argument("--clients", type=int, default=4, help="submitting clients")
    parser.add_argument("--rate", type=float, default=5.0, help="submissions a second per client")
    parser.add_argument(
        "--window", type=float, default=60.0, help="each idle or pruning window, seconds"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="JOB_PRUNE_BATCH_SIZE")
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="start each pruner run as the last one ends, not every JOB_PRUNE_INTERVAL_SECONDS",
    )
    parser.add_argument(
        "--prune-window",
        type=float,
        default=300.0,
        help="seconds of pruning windows in all (inf: until nothing is expired)",
    )
    args = parser.parse_args()
    database_url = os.environ.get("BENCH_PRUNE_DATABASE_URL", DEFAULT_DATABASE_URL)
    recreate_postgres_database(database_url)
    # Beat's pruner stays out of it. The clients renew their token as a real client would: the
    # run outlasts JWT_ACCESS_MINUTES, which keeps its default.
    env = {"JOB_PRUNE_INTERVAL_SECONDS": str(7 * 24 * 3600)}
    if args.batch_size:
        env["JOB_PRUNE_BATCH_SIZE"] = str(args.batch_size)
    figures = Figures()
    with (
        tempfile.TemporaryDirectory(prefix="bench-prune-") as workdir,
        Stack(Path(workdir), database_url=database_url, env=env) as stack,
    ):
        seed(stack, figures, jobs=args.jobs)
        token = RenewedToken(stack.base_url, stack.login_tokens(*stack.create_verified_user()))
        run_side_by_side(stack, figures, token, args)


def seed(stack: Stack, figures: Figures, *, jobs: int) -> None:
    owners = [pk for pk, _ in _owner_ids(stack)]
    began = time.perf_counter()
    connection = connect_database(stack.database_url)
    try:
        for first in range(1, jobs + 1, SEED_CHUNK):
            last = min(jobs, first + SEED_CHUNK - 1)
            connection.execute(
                SEED_SQL,
                {"owners": owners, "expired": jobs // 2, "first": first, "last": last},
            )
        connection.execute(STREAMS_SQL)
        connection.execute("VACUUM ANALYZE")
        # The seed's dirty pages written now, not by the checkpointer during the first idle
        # window, whose p99 they raised 4 to 10 times in two runs.
        connection.execute("CHECKPOINT")
        count = connection.execute("SELECT count(*) FROM jobs_job").fetchone()[0]
    finally:
        connection.close()
    figures.add("jobs_table_rows", count, "rows")
    figures.add("expired_jobs", jobs // 2, "jobs")
    figures.add("seed_seconds", time.perf_counter() - began, "s")


def _owner_ids(stack: Stack) -> list[tuple[int, str]]:
    emails = [email for email, _ in stack.create_verified_users(OWNERS)]
    connection = connect_database(stack.database_url)
    try:
        rows = connection.execute(
            "SELECT id, email FROM users_customuser WHERE email = ANY(%s) ORDER BY id", [emails]
        ).fetchall()
    finally:
        connection.close()
    return rows


class Submitter:
    """Clients submitting single jobs at a steady rate, each latency tagged with the window it
    was sent in: "warmup", then "idle 0", "pruning 1", "idle 1", ... as the pruner sets them."""

    def __init__(self, base_url: str, token: RenewedToken, clients: int, rate: float) -> None:
        self.base_url, self.token, self.clients, self.interval = base_url, token, clients, 1 / rate
        self.phase = "warmup"
        self.samples: list[tuple[str, float, int]] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _client(self, number: int) -> None:
        api = Api(self.base_url)
        # Clients start spread over one interval, then keep to their own schedule.
        due = time.perf_counter() + self.interval * number / self.clients
        sent = 0
        while not self.stopping.is_set():
            time.sleep(max(0.0, due - time.perf_counter()))
            authorization = {"Authorization": f"Bearer {self.token.access()}"}
            phase, began = self.phase, time.perf_counter()
            body = {"name": f"bench {number}-{sent}", "parameters": {"message": "hi"}}
            status, _ = api.request("POST", "/api/jobs/", body, authorization)
            with self.lock:
                self.samples.append((phase, (time.perf_counter() - began) * 1000, status))
            sent += 1
            due += self.interval
        api.close()

    def latencies(self, kind: str) -> list[float]:
        """Every window of this kind ("idle" or "pruning") pooled: successful submissions' ms."""
        return sorted(ms for samples in self.windows(kind) for ms in samples)

    def windows(self, kind: str) -> list[list[float]]:
        """Each window of this kind, in the order they ran: its successful submissions' ms."""
        by_window: dict[str, list[float]] = {}
        for phase, ms, status in self.samples:
            if phase.split()[0] == kind and status == 201:
                by_window.setdefault(phase, []).append(ms)
        return [sorted(samples) for samples in by_window.values()]

    def failures(self) -> str:
        """Answers other than 201, by status code: "0", or "429:12 503:1"."""
        counts: dict[int, int] = {}
        for phase, _, status in self.samples:
            if phase != "warmup" and status != 201:
                counts[status] = counts.get(status, 0) + 1
        return " ".join(f"{status}:{n}" for status, n in sorted(counts.items())) or "0"


class LockSampler:
    """Samples backends waiting for a lock, every LOCK_SAMPLE_SECONDS of a pruning window."""

    def __init__(self, database_url: str, submitter: Submitter) -> None:
        self.database_url, self.submitter = database_url, submitter
        self.samples = self.waiting_samples = 0
        self.longest_wait_ms = 0.0
        self.longest_wait: tuple[str, str | None] = ("", None)
        self.pruner_states: dict[str, int] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        connection = connect_database(self.database_url)
        try:
            while not self.stopping.wait(LOCK_SAMPLE_SECONDS):
                if not self.submitter.phase.startswith("pruning"):
                    continue
                for (state,) in connection.execute(PRUNER_BACKEND_SQL).fetchall():
                    self.pruner_states[state] = self.pruner_states.get(state, 0) + 1
                waiting = connection.execute(LOCK_WAITS_SQL).fetchall()
                self.samples += 1
                self.waiting_samples += 1 if waiting else 0
                for ms, query, blocker in waiting:
                    if float(ms) > self.longest_wait_ms:
                        self.longest_wait_ms, self.longest_wait = float(ms), (query, blocker)
        finally:
            connection.close()


class ServerTally:
    """WAL written, checkpoints counted and their sync time, server-wide (the submissions'
    WAL too), in each kind of window: what the pruner leaves the checkpointer."""

    def __init__(self, database_url: str) -> None:
        self.connection = connect_database(database_url)
        self.by_kind: dict[str, list[float]] = {}
        self.kind: str | None = None
        self.last = self._read()

    def _read(self) -> tuple[float, ...]:
        wal, timed, requested, sync_ms = self.connection.execute(WAL_AND_CHECKPOINTS_SQL).fetchone()
        return float(wal), float(timed + requested), float(sync_ms)

    def enter(self, phase: str) -> None:
        now = self._read()
        if self.kind is not None:
            totals = self.by_kind.setdefault(self.kind, [0.0, 0.0, 0.0])
            for index, value in enumerate(now):
                totals[index] += value - self.last[index]
        self.last, self.kind = now, phase.split()[0]

    def close(self) -> None:
        self.enter("end")
        self.connection.close()


def run_side_by_side(stack: Stack, figures: Figures, token: RenewedToken, args: Any) -> None:
    submitter = Submitter(stack.base_url, token, args.clients, args.rate)
    sampler = LockSampler(stack.database_url, submitter)
    submitter.start()
    try:
        time.sleep(5)  # Connections opened, caches warm.
        sampler.start()
        interval = 0.0 if args.back_to_back else beat_interval_seconds(stack)
        figures.add("pruner_run_interval", interval, "s")
        tally = ServerTally(stack.database_url)

        def on_phase(phase: str) -> None:
            submitter.phase = phase
            tally.enter(phase)

        pruner = prune_in_own_process(
            stack, on_phase, interval=interval, window=args.window, pruning=args.prune_window
        )
        tally.close()
        sampler.stop()
    finally:
        submitter.stop()
    idle, pruning = submitter.latencies("idle"), submitter.latencies("pruning")
    figures.add("windows_each", args.window, "s")
    figures.add("windows", f"{pruner['windows'] + 1} idle, {pruner['windows']} pruning")
    for name, samples in (("idle", idle), ("pruning", pruning)):
        figures.add(f"submit_{name}_count", len(samples), "requests")
        figures.add(f"submit_{name}_p50", percentile(samples, 0.50), "ms")
        figures.add(f"submit_{name}_p99", percentile(samples, 0.99), "ms")
    figures.add("submit_failures", submitter.failures(), "requests")
    figures.add("submit_p50_ratio", percentile(pruning, 0.5) / percentile(idle, 0.5), "x")
    figures.add("submit_p99_ratio", percentile(pruning, 0.99) / percentile(idle, 0.99), "x")
    # Each window's own p99, in the order they ran: how far windows of one kind differ.
    for kind in ("idle", "pruning"):
        p99s = [f"{percentile(samples, 0.99):.1f}" for samples in submitter.windows(kind)]
        print(f"submit_{kind}_window_p99s: {' '.join(p99s)} ms")
    for kind in ("idle", "pruning"):
        wal, checkpoints, sync_ms = tally.by_kind.get(kind, (0.0, 0.0, 0.0))
        figures.add(f"server_wal_in_{kind}_windows", wal / 2**20, "MB")
        figures.add(f"server_checkpoints_in_{kind}_windows", int(checkpoints), "checkpoints")
        figures.add(f"server_checkpoint_sync_in_{kind}_windows", sync_ms, "ms")
    figures.add("pruner_runs", pruner["runs"], "runs")
    figures.add("pruner_deleted_jobs", pruner["counts"]["deleted"], "jobs")
    figures.add("pruner_seconds", pruner["seconds"], "s (pruning windows)")
    figures.add("pruner_jobs_per_second", pruner["counts"]["deleted"] / pruner["seconds"], "/s")
    figures.add("pruner_peak_rss", pruner["peak_rss_mb"], "MB")
    figures.add("pruner_rss_before_pruning", pruner["rss_before_mb"], "MB")
    figures.add("pruner_statements", pruner["statements"], "statements")
    # A statement holds row locks if it writes, locks (FOR UPDATE) or commits.
    locking = pruner["locking_statements"]
    figures.add("pruner_locking_statements", locking, "statements")
    figures.add("pruner_locking_over_100ms", pruner["locking_over_100ms"], "statements")
    figures.add("pruner_locking_p99", pruner["locking_p99_ms"], "ms")
    figures.add("pruner_locking_p999", pruner["locking_p999_ms"], "ms")
    figures.add("pruner_slowest_locking_statement", pruner["slowest_locking_ms"], "ms")
    print(f"pruner_slowest_locking_statement_sql: {pruner['slowest_locking']}")
    figures.add("pruner_slowest_statement", pruner["slowest_statement_ms"], "ms")
    print(f"pruner_slowest_statement_sql: {pruner['slowest_statement']}")
    figures.add("pruner_server_side_over_100ms", pruner["server_slow_count"], "statements")
    for line in pruner["server_slow"]:
        print(f"pruner_server_side_slow: {' '.join(line.split())}")
    for line in pruner["slow"]:
        print(f"pruner_slow_statement: {line}")
    for sql, ms in pruner["time_by_statement"]:
        print(f"pruner_time_in: {ms:.0f} ms {sql}")
    # A batch: its transaction (which holds the row locks) and the stream updates before it.
    figures.add("pruner_batches", pruner["transactions"], "batches")
    figures.add("pruner_batch_p99", pruner["transaction_p99_ms"], "ms")
    figures.add("pruner_slowest_batch", pruner["slowest_transaction_ms"], "ms")
    # Where the pruner's backend spent its statements, by 50 ms samples.
    states = sorted(sampler.pruner_states.items(), key=lambda item: -item[1])
    print(f"pruner_backend_samples: {' '.join(f'{state} {n}' for state, n in states)}")
    figures.add("lock_wait_samples", f"{sampler.waiting_samples}/{sampler.samples}")
    figures.add("lock_wait_longest_seen", sampler.longest_wait_ms, "ms")
    print(f"lock_wait_longest_waiter: {sampler.longest_wait[0]}")
    print(f"lock_wait_longest_blocker: {sampler.longest_wait[1]}")
    left = connect_database(stack.database_url)
    try:
        remaining = left.execute("SELECT count(*) FROM jobs_job").fetchone()[0]
    finally:
        left.close()
    figures.add("jobs_table_rows_after", remaining, "rows")


def beat_interval_seconds(stack: Stack) -> float:
    """Beat's interval between pruner runs, as this shell's settings (or their defaults) set
    it: the Stack's own setting only keeps its Beat from pruning."""
    env = {**stack.env()}
    env.pop("JOB_PRUNE_INTERVAL_SECONDS")
    if "JOB_PRUNE_INTERVAL_SECONDS" in os.environ:
        env["JOB_PRUNE_INTERVAL_SECONDS"] = os.environ["JOB_PRUNE_INTERVAL_SECONDS"]
    completed = subprocess.run(  # noqa: S603 - our own command line.
        [sys.executable, "manage.py", "shell", "-c", BEAT_INTERVAL],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(completed.stdout.strip().splitlines()[-1])


def prune_in_own_process(
    stack: Stack,
    on_phase: Callable[[str], None],
    *,
    interval: float,
    window: float,
    pruning: float,
) -> dict[str, Any]:
    """Run the pruner as a process of its own, as the housekeeping worker would, through its
    windows, calling `on_phase` with each window's name as it begins; the pruner's report."""
    code = f"INTERVAL, WINDOW, PRUNING = {interval!r}, {window!r}, float({str(pruning)!r})\n"
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(  # noqa: S603 - our own command line.
            [sys.executable, "manage.py", "shell", "-c", code + PRUNER],
            cwd=Path(__file__).resolve().parent.parent,
            env=stack.env(),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        report = None
        for line in process.stdout:
            if line.startswith("PHASE "):
                on_phase(line.removeprefix("PHASE ").strip())
            elif line.startswith("RESULT"):
                report = json.loads(line.removeprefix("RESULT"))
        if process.wait() != 0 or report is None:
            errors.seek(0)
            raise RuntimeError(f"the pruner process failed:\n{errors.read()[-4000:]}")
    return report


def percentile(samples: list[float], q: float) -> float:
    return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else float("nan")


if __name__ == "__main__":
    main()
