"""Benchmark the event stream on the real system (scripts/stack.py), on 127.0.0.1 only.

Three figures, each printed as `name: value unit`:

1. Latency: one client follows its stream while echo jobs are submitted at a steady rate; each
   event's delay is its arrival at the client minus its `timestamp` (when the state changed,
   before the commit), over every pending, started and completed event.
2. Loss: clients of several users drop their streams at random moments, while jobs run, and
   reconnect with Last-Event-ID; once the jobs are done, the ids each user's clients received
   are compared with the events table. Lost and repeated events are counted.
3. Load: 500 open streams (50 users x 10); the events process's peak RSS, and
   scripts/bench.py's single-submission phase with and without them, in the order none, open,
   open, none, so that drift of the machine biases neither side.
4. Webhooks: echo jobs at a steady rate (--webhook-rate, 10 a second each for two users),
   whose owner has two endpoints: one on a receiver
   that answers at once, one on a receiver that never answers within the delivery timeout
   (it holds each request 15 s); another user's endpoint times out the same way. The figure
   is each job.completed's arrival at the quick receiver minus the event's `timestamp`.

    python scripts/bench_events.py            # `make bench-events`, on PostgreSQL
    python scripts/bench_events.py --quick    # fewer jobs and disconnects

PostgreSQL is BENCH_EVENTS_DATABASE_URL (default: the local server's `jobsystem_bench_events`,
dropped and created afresh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench import Figures, echo_jobs, measure_submissions, rss_bytes
from scripts.sse import Frame, FrameParser
from scripts.stack import Api, Stack, connect_database, recreate_postgres_database
from webhooks.tests.receiver import Receiver

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/jobsystem_bench_events"
# Every wait in the run ends by this, so that a broken stream fails the run instead of hanging.
PHASE_TIMEOUT_SECONDS = 120.0
STREAM_USERS, STREAMS_PER_USER = 50, 10


async def follow(
    client: httpx.AsyncClient,
    token: str,
    on_frame,
    last_id: int | None = None,
    headers_sent: asyncio.Event | None = None,
) -> None:
    """Read one stream until cancelled, handing each complete frame to on_frame."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    async with client.stream("GET", "/api/events/", headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream refused: {response.status_code} {await response.aread()}")
        if headers_sent is not None:
            headers_sent.set()
        parser = FrameParser()
        async for line in response.aiter_lines():
            frame = parser.feed(line)
            if frame is not None:
                on_frame(frame)


def stream_client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.events_url,
        timeout=httpx.Timeout(10, read=60),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
    )


def submit_paced(stack: Stack, tokens: list[str], rate: float, stop: threading.Event) -> int:
    """Submit echo jobs at `rate` a second, round the users, until `stop`; return how many."""
    apis = [Api(stack.base_url, token) for token in tokens]
    submitted, started = 0, time.monotonic()
    while not stop.is_set():
        status, body = apis[submitted % len(apis)].request(
            "POST", "/api/jobs/", {"name": f"paced {submitted}", "job_type": "echo"}
        )
        if status != 201:
            raise RuntimeError(f"submission refused: {status} {body}")
        submitted += 1
        time.sleep(max(0.0, started + submitted / rate - time.monotonic()))
    return submitted


# 1. Latency


async def measure_latency(figures: Figures, stack: Stack, token: str, args) -> None:
    delays: list[float] = []
    completed = 0

    def on_frame(frame: Frame) -> None:
        nonlocal completed
        if frame.id is None or frame.event.startswith("stream."):
            return
        changed = datetime.fromisoformat(frame.data["timestamp"]).timestamp()
        delays.append((time.time() - changed) * 1000)
        completed += frame.event == "job.completed"

    async with stream_client(stack) as client:
        opened = asyncio.Event()
        reader = asyncio.create_task(follow(client, token, on_frame, headers_sent=opened))
        await asyncio.wait_for(opened.wait(), 10)
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        submitting = loop.run_in_executor(None, submit_paced, stack, [token], args.rate, stop)
        await asyncio.sleep(args.latency_seconds)
        stop.set()
        jobs = await submitting
        deadline = time.monotonic() + PHASE_TIMEOUT_SECONDS
        while completed < jobs and time.monotonic() < deadline and not reader.done():
            await asyncio.sleep(0.1)
        reader.cancel()
    figures.add("latency_jobs", jobs, "jobs")
    figures.add("latency_events", len(delays), "events")
    figures.percentiles("status_change_to_event", delays)
    if completed < jobs:
        raise RuntimeError(f"only {completed} of {jobs} completions arrived")


# 2. Loss over random disconnects


async def measure_loss(figures: Figures, stack: Stack, tokens: dict[int, str], args) -> None:
    received: dict[int, list[int]] = defaultdict(list)
    last_id: dict[int, int | None] = dict.fromkeys(tokens)
    disconnects = 0

    def on_frame_for(owner_id: int):
        def on_frame(frame: Frame) -> None:
            if frame.id is not None:
                last_id[owner_id] = frame.id
                if not frame.event.startswith("stream."):
                    received[owner_id].append(frame.id)

        return on_frame

    async def client_of(owner_id: int, client: httpx.AsyncClient) -> None:
        nonlocal disconnects
        while disconnects < args.disconnects:
            # A random moment: mid-frame, between frames or before the first read.
            with_timeout = asyncio.wait_for(
                follow(client, tokens[owner_id], on_frame_for(owner_id), last_id[owner_id]),
                random.uniform(0.01, 0.4),  # noqa: S311 - a benchmark's randomness.
            )
            try:
                await with_timeout
            except TimeoutError:
                disconnects += 1

    stop = threading.Event()
    loop = asyncio.get_running_loop()
    submitting = loop.run_in_executor(
        None, submit_paced, stack, list(tokens.values()), args.rate, stop
    )
    async with stream_client(stack) as client:
        clients = [client_of(owner_id, client) for owner_id in tokens]
        await asyncio.wait_for(asyncio.gather(*clients), PHASE_TIMEOUT_SECONDS)
        stop.set()
        await submitting
        expected = await loop.run_in_executor(None, wait_for_events, stack, list(tokens))

        async def catch_up(owner_id: int) -> None:
            def done() -> bool:
                return (last_id[owner_id] or 0) >= max(expected[owner_id], default=0)

            while not done():
                with_timeout = asyncio.wait_for(
                    follow(client, tokens[owner_id], on_frame_for(owner_id), last_id[owner_id]),
                    0.5,
                )
                with suppress(TimeoutError):
                    await with_timeout

        await asyncio.wait_for(
            asyncio.gather(*(catch_up(owner_id) for owner_id in tokens)), PHASE_TIMEOUT_SECONDS
        )
    table = sum(len(seqs) for seqs in expected.values())
    lost = sum(len(expected[owner] - set(received[owner])) for owner in tokens)
    repeated = sum(len(ids) - len(set(ids)) for ids in received.values())
    figures.add("disconnects", disconnects, "disconnects")
    figures.add("events_in_table", table, "events")
    figures.add("events_lost", lost, "events")
    figures.add("events_repeated", repeated, "events")


def wait_for_events(stack: Stack, owner_ids: list[int]) -> dict[int, set[int]]:
    """Once every job has finished, each owner's event numbers as the table holds them."""
    db = connect_database(stack.database_url)
    deadline = time.monotonic() + PHASE_TIMEOUT_SECONDS
    marks = ",".join(str(owner) for owner in owner_ids)
    while db.execute(
        f"SELECT count(*) FROM jobs_job WHERE owner_id IN ({marks}) "  # noqa: S608 - ints.
        "AND status NOT IN ('completed', 'failed', 'cancelled')"
    ).fetchone()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish")
        time.sleep(0.2)
    # Numbered or not yet (a stream numbers what it reads): a user's events are numbered
    # 1, 2, 3, ... with no gap, so n events should reach its clients as 1 to n.
    rows = db.execute(
        f"SELECT owner_id, count(*) FROM events_event WHERE owner_id IN ({marks})"  # noqa: S608
        " GROUP BY owner_id"
    ).fetchall()
    db.close()
    expected: dict[int, set[int]] = {owner: set() for owner in owner_ids}
    for owner, count in rows:
        expected[owner] = set(range(1, count + 1))
    return expected


# 3. 500 open streams


class OpenStreams:
    """Streams held open in a thread of their own, for as long as the block lasts."""

    def __init__(self, stack: Stack, tokens: list[str]) -> None:
        self.stack, self.tokens = stack, tokens
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.frames = 0

    def __enter__(self) -> OpenStreams:
        self.thread.start()
        self._run(self._open()).result(PHASE_TIMEOUT_SECONDS)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._run(self._close()).result(PHASE_TIMEOUT_SECONDS)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    def _run(self, coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def _open(self) -> None:
        self.client = stream_client(self.stack)
        self.readers = []
        for token in self.tokens:
            opened = asyncio.Event()
            self.readers.append(
                asyncio.create_task(follow(self.client, token, self._count, headers_sent=opened))
            )
            await asyncio.wait_for(opened.wait(), 10)

    def _count(self, frame: Frame) -> None:
        self.frames += 1

    async def _close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.client.aclose()


def measure_load(figures: Figures, stack: Stack, token: str, args) -> None:
    users = stack.create_verified_users(STREAM_USERS)
    tokens = [stack.login(*user) for user in users]
    events = stack.processes["events"].process.pid
    rates: dict[str, list[float]] = {"none": [], "open": []}

    def single(label: str) -> None:
        requests = [("/api/jobs/", body) for body in echo_jobs(args.jobs, f"single {label}")]
        rates[label].append(
            measure_submissions(
                figures, stack, token, f"single_{label}", requests, args.jobs, args.clients
            )
        )

    figures.add("events_process_idle_rss", rss_bytes(events) / 2**20, "MB")
    single("none")
    with OpenStreams(stack, [t for t in tokens for _ in range(STREAMS_PER_USER)]):
        figures.add("open_streams", len(tokens) * STREAMS_PER_USER, "streams")
        figures.add("events_process_rss_500_streams", rss_bytes(events) / 2**20, "MB")
        peak = Peak(events)
        single("open")
        single("open")
        figures.add("events_process_peak_rss_500_streams", peak.stop() / 2**20, "MB")
    single("none")
    none, opened = sum(rates["none"]) / 2, sum(rates["open"]) / 2
    figures.add("single_rate_without_streams", none, "jobs/s")
    figures.add("single_rate_with_500_streams", opened, "jobs/s")
    figures.add("single_with_streams_vs_without", opened / none, "x")


class Peak(threading.Thread):
    """The highest RSS of one process while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, rss_bytes(pid)
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        return self.peak


def run(args: argparse.Namespace, figures: Figures) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    env = {
        "MAX_ACTIVE_JOBS_PER_USER": "1000000",
        "JWT_ACCESS_MINUTES": "120",
        "WEB_CONCURRENCY": "1",
        # The receivers of the webhook phase listen on loopback.
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    }
    try:
        with Stack(
            workdir,
            database_url=args.database_url,
            web_workers=1,
            web_threads=8,
            worker_concurrency=4,
            webhooks=True,
            env=env,
        ) as stack:
            figures.add("cores", os.cpu_count() or 0, "cores")
            if args.webhooks_only:
                measure_webhooks(figures, stack, args)
                return
            users = stack.create_verified_users(args.loss_users + 1)
            tokens = [stack.login(*user) for user in users]
            owner_ids = owners(stack, [email for email, _ in users])
            asyncio.run(measure_latency(figures, stack, tokens[0], args))
            loss_tokens = dict(zip(owner_ids[1:], tokens[1:], strict=True))
            asyncio.run(measure_loss(figures, stack, loss_tokens, args))
            measure_load(figures, stack, tokens[0], args)
            measure_webhooks(figures, stack, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# 4. Webhooks, with another endpoint timing out


def measure_webhooks(figures: Figures, stack: Stack, args) -> None:
    def hang(received) -> tuple[int, bytes]:
        time.sleep(15)  # Past WEBHOOK_TIMEOUT_SECONDS: the sender gives up first.
        return 200, b""

    owner, other = (stack.login(*user) for user in stack.create_verified_users(2))
    with Receiver() as quick, Receiver(answer=hang) as hanging:
        for token, url in ((owner, quick.url), (owner, hanging.url), (other, hanging.url)):
            status, body = Api(stack.base_url, token).request(
                "POST", "/api/webhooks/", {"url": url, "event_types": ["job.completed"]}
            )
            if status != 201:
                raise RuntimeError(f"endpoint refused: {status} {body}")
        stop = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            # The other user's jobs keep its hanging endpoint busy meanwhile.
            noise = pool.submit(submit_paced, stack, [other], args.webhook_rate, stop)
            measured = pool.submit(submit_paced, stack, [owner], args.webhook_rate, stop)
            time.sleep(args.latency_seconds)
            stop.set()
            jobs = measured.result()
            noise.result()
        figures.add("webhook_jobs", jobs, "jobs")
        deadline = time.monotonic() + PHASE_TIMEOUT_SECONDS
        while len(quick.received) < jobs and time.monotonic() < deadline:
            time.sleep(0.1)
        delays = [
            (received.at - datetime.fromisoformat(received.payload["timestamp"]).timestamp()) * 1000
            for received in quick.received
        ]
        figures.add("webhook_deliveries", len(quick.received), "deliveries")
        figures.add("hanging_endpoint_requests", len(hanging.received), "requests")
        figures.percentiles("job_finished_to_first_webhook_attempt", delays)
        if len(quick.received) < jobs:
            raise RuntimeError(f"only {len(quick.received)} of {jobs} webhooks arrived")


def owners(stack: Stack, emails: list[str]) -> list[int]:
    db = connect_database(stack.database_url)
    ids = []
    for email in emails:
        query = "SELECT id FROM users_customuser WHERE email = %s"
        if stack.database_url.startswith("sqlite"):
            query = query.replace("%s", "?")
        ids.append(db.execute(query, (email,)).fetchone()[0])
    db.close()
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="jobs/s while streams read")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--webhook-rate", type=float, default=10.0, help="jobs/s of each webhook user"
    )
    parser.add_argument("--disconnects", type=int, default=1000)
    parser.add_argument("--loss-users", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per single phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_EVENTS_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="a PostgreSQL database to drop and create afresh (default: %(default)s)",
    )
    parser.add_argument("--sqlite", action="store_true", help="use a fresh SQLite file instead")
    parser.add_argument("--quick", action="store_true", help="fewer jobs and disconnects")
    parser.add_argument("--webhooks-only", action="store_true", help="only the webhook phase (4.)")
    args = parser.parse_args()
    if args.quick:
        args.latency_seconds, args.disconnects, args.jobs = 5.0, 200, 1000
    if args.sqlite:
        args.database_url = None
    else:
        try:
            recreate_postgres_database(args.database_url)
        except (OSError, subprocess.CalledProcessError) as exc:
            parser.exit(2, f"bench_events: cannot reach PostgreSQL ({exc}); try --sqlite.\n")
    started = time.monotonic()
    run(args, Figures())
    print(f"bench_events_seconds: {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
