"""Real Celery processes for integration tests, run against the test database and Redis."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from job_system.celery import app as celery_app

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


class CeleryProcess:
    """A `celery -A job_system ...` subprocess whose output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 (our own command line)
            [sys.executable, "-m", "celery", "-A", "job_system", *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(name: str, log_dir: Path, *, queues: str = "default,long,cpu") -> CeleryProcess:
    hostname = f"{name}@{socket.gethostname()}"
    worker = CeleryProcess(
        [
            "worker",
            f"--hostname={hostname}",
            f"--queues={queues}",
            "--concurrency=2",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
        log_dir / f"{name}.log",
        # Emails land in files that tests can read, as a mailbox would receive them.
        subprocess_env(
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=str(log_dir / "emails"),
        ),
    )
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(f"worker {name} exited early:\n{worker.output()}")
        if celery_app.control.ping(destination=[hostname], timeout=0.5):
            return worker
    worker.stop()
    pytest.fail(f"worker {name} did not answer within {WORKER_START_TIMEOUT_SECONDS}s")


def wait_for(predicate, *, timeout: float, interval: float = 0.1, message: str = ""):
    """Poll until predicate() returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(message or f"condition not met within {timeout}s")
