"""Real Celery processes for integration tests, run against the test database and Redis."""

import base64
import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

from job_system.celery import app as celery_app
from jobs import queue
from jobs.models import Job
from scripts.stack import ManagedProcess

WORKER_START_TIMEOUT_SECONDS = 60


def database_url_for_subprocess() -> str:
    """The URL of the test database, as pytest-django has set it up, for another process."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"])
    host = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
    return f"postgres://{credentials}@{host}/{db['NAME']}"


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        DATABASE_URL=database_url_for_subprocess(),
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        SECRET_KEY=settings.SECRET_KEY,
        PYTHONUNBUFFERED="1",
        **overrides,
    )
    return env


def start_procfile_worker(name: str, log_dir: Path, env: dict[str, str]) -> ManagedProcess:
    """Start the Procfile's worker `name` and wait until its log says it is ready.

    Its log, not a ping: Beat's housekeeping worker answers none (remote control is off).
    """
    from scripts.stack import procfile_process

    worker = procfile_process(name, env, log_dir).start()
    ready = f"{name}@{socket.gethostname()} ready."
    wait_for(
        lambda: not worker.alive or ready in worker.log_path.read_text(),
        timeout=WORKER_START_TIMEOUT_SECONDS,
        message=f"the {name} worker did not start",
    )
    assert worker.alive, worker.log_tail()
    return worker


def celery_process(name: str, args: list[str], log_dir: Path, env: dict[str, str]):
    """Start `celery -A job_system ARGS` in its own process group, logging to a file."""
    argv = [sys.executable, "-m", "celery", "-A", "job_system", *args]
    return ManagedProcess(name, argv, env, log_dir / f"{name}.log").start()


def start_worker(
    name: str,
    log_dir: Path,
    *,
    queues: str = "default,long,cpu",
    env: dict[str, str] | None = None,
    concurrency: int = 2,
    include: str = "",
) -> ManagedProcess:
    """Start a worker process and wait until it answers a ping.

    `include` names modules the worker imports at start, such as test-only job types.
    """
    hostname = f"{name}@{socket.gethostname()}"
    args = [
        "worker",
        f"--hostname={hostname}",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=INFO",
        *([f"--include={include}"] if include else []),
    ]
    # Emails land in files that tests can read, as a mailbox would receive them.
    mailbox = {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(log_dir / "emails"),
    }
    worker_env = subprocess_env(**(mailbox | (env or {})))
    worker = celery_process(name, args, log_dir, worker_env)
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not worker.alive:
            pytest.fail(f"worker {name} exited early:\n{worker.log_tail()}")
        if celery_app.control.ping(destination=[hostname], timeout=0.5):
            return worker
    worker.stop()
    pytest.fail(f"worker {name} did not answer within {WORKER_START_TIMEOUT_SECONDS}s")


def pool_processes(worker: ManagedProcess) -> set[int]:
    """The process ids of a prefork worker's live pool processes (Linux).

    Its main process's children, less those that have ended and wait to be reaped: the pool
    notices that one ended only a while later.
    """
    main = worker.process.pid
    children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    return {int(pid) for pid in children if _process_state(pid) not in {None, "Z"}}


def _process_state(pid: str) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # "pid (command) state ...": the command may hold spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()[0]


def wait_for(predicate, *, timeout: float, interval: float = 0.1, message: str = ""):
    """Poll until predicate() returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(message or f"condition not met within {timeout}s")


def take_published(job: Job) -> list[dict]:
    """Remove the run_job messages for `job` from its broker queue; return their headers.

    Whatever requests handed to this process's publisher is published first.
    """
    queue.publisher.flush(timeout=10)
    broker = broker_redis()
    name = queue.queue_for(job.job_type)
    headers = []
    for raw in broker.lrange(name, 0, -1):
        message_headers, args = decode(raw)
        if args == [str(job.pk)]:
            broker.lrem(name, 1, raw)
            headers.append(message_headers)
    return headers


def broker_redis() -> redis.Redis:
    """A client of the test broker's Redis, to look at its queues directly."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def take_queue(name: str) -> list[tuple[dict, list]]:
    """Empty a broker queue; return each message's headers and task arguments, oldest first.

    Whatever requests handed to this process's publisher is published first.
    """
    queue.publisher.flush(timeout=10)
    broker = broker_redis()
    messages = []
    while (raw := broker.rpop(name)) is not None:
        messages.append(decode(raw))
    return messages


def decode(raw: bytes) -> tuple[dict, list]:
    """A Celery message as kombu stores it in Redis: its headers and task arguments."""
    message = json.loads(raw)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"], args
