"""The whole system as real processes on 127.0.0.1: Redis, gunicorn, the events process
(uvicorn), Celery workers and Beat (with the Procfile's housekeeping worker, which serves Beat's
tasks).

Load, chaos and benchmark scripts start one of these, drive it over HTTP, and break parts of
it on purpose. Nothing here talks to anything but loopback.

    with Stack(Path("/tmp/run"), web_workers=2) as stack:
        token = stack.login(*stack.create_verified_user())
        Api(stack.base_url, token).request("POST", "/api/jobs/", {"name": "x"})

The job workers follow the Procfile's process types: one `worker1` for `worker` and, where the
Procfile has it, one `long1` for `worker-long`, each serving the queues its Procfile line names.
A caller that wants other workers (four consuming every queue, say) passes `workers`.

Start and restart processes (start_worker, restart_redis) from a thread that lives as long as
the Stack, such as the main thread: each child asks the kernel for a SIGTERM when its parent
dies (localredis.die_with_parent), and for the kernel the parent is the *thread* that started
it (prctl(2), PR_SET_PDEATHSIG). A worker restarted from a short-lived thread stops with it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from scripts import localredis

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
IDLE_RECONNECT_SECONDS = 1.5


@dataclass
class ManagedProcess:
    """A child process in its own session, with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own command lines, no shell.
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=localredis.die_with_parent,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.alive:
            os.killpg(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the whole process group, forcefully if it does not stop in time."""
        if not self.alive:
            return
        self.signal_group(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole group at once: the crash the system must survive."""
        self.stop(signal.SIGKILL)

    def log_tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]


@dataclass(frozen=True)
class WorkerSpec:
    """One job-worker process: the queues it consumes and its pool's size."""

    queues: str
    concurrency: int


# The Procfile's job-worker process types, and the prefix of the names the Stack gives them.
WORKER_PROCESS_TYPES = {"worker": "worker", "worker-long": "long"}


def procfile_workers(concurrency: dict[str, int]) -> dict[str, WorkerSpec]:
    """One worker per job-worker process type of the Procfile, on the queues that line names.

    `concurrency` maps a process type to its pool size. Reading the queues from the Procfile
    keeps the Stack running what `make run` runs, on this commit and on an older one.
    """
    workers = {}
    for process_type, prefix in WORKER_PROCESS_TYPES.items():
        try:
            command = procfile_command(process_type)
        except KeyError:
            continue
        queues = re.search(r"--queues[= ](\S+)", command)
        if queues is None:
            raise RuntimeError(f"the Procfile's {process_type!r} line names no --queues")
        workers[f"{prefix}1"] = WorkerSpec(queues.group(1), concurrency[process_type])
    return workers


class Stack:
    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str | None = None,
        web_workers: int = 2,
        web_threads: int = 4,
        worker_concurrency: int = 2,
        long_worker_concurrency: int = 2,
        workers: dict[str, WorkerSpec] | None = None,
        beat: bool = True,
        webhooks: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = localredis.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.events_port = localredis.free_port()
        self.events_url = f"http://127.0.0.1:{self.events_port}"
        self.database_url = database_url or f"sqlite:///{workdir / 'db.sqlite3'}"
        self.web_workers = web_workers
        self.web_threads = web_threads
        self.workers = workers or procfile_workers(
            {"worker": worker_concurrency, "worker-long": long_worker_concurrency}
        )
        self.with_beat = beat
        self.with_webhooks = webhooks
        self.extra_env = env or {}
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = localredis.free_port()
        self.processes: dict[str, ManagedProcess] = {}

    # Starting and stopping

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.start_redis()
        self.manage("migrate", "--noinput")
        self.processes["web"] = self._process("web", self._web_argv()).start()
        if "events" in procfile_types():
            self.processes["events"] = events_process(self.env(), self.workdir, self.events_port)
        for name in self.worker_names:
            self.start_worker(name)
        if self.with_beat:
            # Exactly as the Procfile runs it: its options are what keeps it out of Flower.
            self.start_housekeeping()
            self.start_beat()
        if self.with_webhooks:
            self.start_webhooks()
        self.wait_until_healthy()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        if self.redis is not None:
            localredis.stop_redis(self.redis)

    def start_redis(self) -> None:
        self.redis, self.redis_url = localredis.start_redis(self.redis_port, self.workdir / "redis")

    def restart_redis(self) -> None:
        """Stop Redis and start an empty one on the same port: every queued message is gone.

        SHUTDOWN NOSAVE, as an operator's or a crash's restart of a Redis that keeps nothing.
        """
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.redis_url, socket_timeout=5).shutdown(nosave=True)
        localredis.stop_redis(self.redis)
        self.start_redis()

    def flush_redis(self) -> None:
        """FLUSHDB on the running Redis: queues, unacknowledged messages and caches go."""
        redis.Redis.from_url(self.redis_url, socket_timeout=5).flushdb()

    def start_housekeeping(self) -> ManagedProcess:
        """Start (or start again) the Procfile's housekeeping worker, which runs Beat's tasks."""
        self.processes["housekeeping"] = procfile_process(
            "housekeeping", self.env(), self.workdir
        ).start()
        return self.processes["housekeeping"]

    def start_beat(self) -> ManagedProcess:
        """Start (or start again) Beat."""
        self.processes["beat"] = self._process(
            "beat", self._celery("beat", "--loglevel=INFO")
        ).start()
        return self.processes["beat"]

    def web_processes(self) -> list[int]:
        """The process ids of gunicorn's worker processes, which serve the requests."""
        return children(self.processes["web"].process.pid)

    @property
    def worker_names(self) -> list[str]:
        return list(self.workers)

    def start_worker(self, name: str) -> ManagedProcess:
        """Start (or start again) the job worker `name`, one of `worker_names`."""
        spec = self.workers[name]
        argv = self._celery(
            "worker",
            # Each process its own name: chaos tells a killed worker's claims by it.
            f"--hostname={name}@%h",
            f"--queues={spec.queues}",
            f"--concurrency={spec.concurrency}",
            "--loglevel=INFO",
        )
        self.processes[name] = self._process(name, argv).start()
        return self.processes[name]

    def start_webhooks(self) -> ManagedProcess:
        """Start (or start again) the Procfile's webhooks worker, which sends deliveries."""
        self.processes["webhooks"] = procfile_process("webhooks", self.env(), self.workdir).start()
        return self.processes["webhooks"]

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        status, body = None, ""
        while time.monotonic() < deadline:
            for process in self.processes.values():
                if not process.alive:
                    raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                status, body = Api(self.base_url).request("GET", "/api/health/")
            except OSError:
                status = None
            if status == 200 and self._events_answer():
                return
            time.sleep(0.25)
        raise RuntimeError(f"the system did not become healthy: {status} {body}")

    def _events_answer(self) -> bool:
        return "events" not in self.processes or events_answer(self.events_url)

    # Helpers for scripts

    def manage(self, *args: str, input_text: str | None = None) -> str:
        completed = subprocess.run(  # noqa: S603 - our own command line.
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            input=input_text,
            capture_output=True,
            text=True,
            check=True,
        )
        return completed.stdout

    def create_verified_user(self) -> tuple[str, str]:
        return self.create_verified_users(1)[0]

    def create_verified_users(self, count: int) -> list[tuple[str, str]]:
        """Create `count` verified users; return each one's (email, password).

        One `manage.py shell` for them all: each start-up costs about a second.
        """
        users = [
            (f"load-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16))
            for _ in range(count)
        ]
        self.manage(
            "shell",
            input_text=(
                "from users.models import CustomUser\n"
                f"for email, password in {users!r}:\n"
                "    CustomUser.objects.create_user(email, password, is_verified=True)\n"
            ),
        )
        return users

    def login(self, email: str, password: str) -> str:
        return self.login_tokens(email, password)["access"]

    def login_tokens(self, email: str, password: str) -> dict[str, str]:
        """The access and refresh tokens of a login."""
        status, body = Api(self.base_url).request(
            "POST", "/api/login/", {"email": email, "password": password}
        )
        if status != 200:
            raise RuntimeError(f"login failed: {status} {body}")
        return body

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            # Like `make test`: a developer's .env must not point the stack elsewhere.
            "ENV_FILE": "/dev/null",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": getattr(self, "redis_url", ""),
            # The broker too, even if the caller's environment names another one.
            "CELERY_BROKER_URL": getattr(self, "redis_url", ""),
            "SECRET_KEY": os.environ.get("SECRET_KEY", "stack-" + "k" * 48),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Load scripts hammer the API from one address on purpose.
            "THROTTLE_JOB_CREATE": "1000000/min",
            "THROTTLE_LOGIN": "100000/min",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def _process(self, name: str, argv: list[str]) -> ManagedProcess:
        return ManagedProcess(name, argv, self.env(), self.workdir / f"{name}.log")

    def _celery(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "job_system", *args]

    def _web_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "job_system.wsgi:application",
            f"--bind=127.0.0.1:{self.port}",
            f"--workers={self.web_workers}",
            f"--threads={self.web_threads}",
            # As the Procfile runs it: benchmarks pay for the access log as production does.
            "--access-logfile=-",
            "--no-control-socket",
        ]


def children(pid: int) -> list[int]:
    """The process ids of a process's children (Linux); [] once it has gone."""
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except FileNotFoundError:
        return []


def procfile_command(name: str) -> str:
    """The shell command the Procfile gives process type `name`."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process_type, _, command = line.partition(":")
        if process_type == name:
            return command.strip()
    raise KeyError(f"the Procfile has no {name!r} process")


def procfile_types() -> set[str]:
    """The process types the Procfile names."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {line.partition(":")[0] for line in lines if line and not line.startswith("#")}


def events_process(env: dict[str, str], workdir: Path, port: int) -> ManagedProcess:
    """Start the Procfile's events process on 127.0.0.1:`port`; it answers within seconds."""
    env = {**env, "EVENTS_BIND": "127.0.0.1", "EVENTS_PORT": str(port)}
    return procfile_process("events", env, workdir).start()


def events_answer(url: str) -> bool:
    """Whether the events process at `url` answers: without a token, with its 401."""
    try:
        status, _body = Api(url).request("GET", "/api/events/")
    except OSError:
        return False
    return status == 401


def procfile_process(name: str, env: dict[str, str], workdir: Path) -> ManagedProcess:
    """The Procfile's `name` process, not started yet, logging and counting in `workdir`.

    Its command runs as the Procfile says, with this virtualenv's celery and gunicorn first on
    PATH, and its metrics go to `workdir`, not to the checkout's .run/prometheus, which belongs
    to `make run`.
    """
    env = {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
    }
    argv = ["/bin/sh", "-c", procfile_command(name)]
    return ManagedProcess(name, argv, env, workdir / f"{name}.log")


def connect_database(database_url: str):
    """A plain DB-API connection to a Stack's database, in autocommit mode.

    Scripts read the truth from the database directly; autocommit lets each poll see what
    the workers have committed since the last one.
    """
    if database_url.startswith("sqlite:///"):
        return sqlite3.connect(
            database_url.removeprefix("sqlite:///"), timeout=20, isolation_level=None
        )
    import psycopg  # Only PostgreSQL runs need it.

    return psycopg.connect(database_url, autocommit=True)


def recreate_postgres_database(url: str) -> None:
    """Start from an empty PostgreSQL database, so figures count only this run's jobs."""
    drop_postgres_database(url)
    _on_postgres_server(url, f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')


def drop_postgres_database(url: str) -> None:
    _on_postgres_server(url, f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}"')


def _on_postgres_server(url: str, statement: str) -> None:
    server = url.rsplit("/", 1)[0] + "/postgres"
    subprocess.run(["psql", server, "-q", "-c", statement], check=True)  # noqa: S603,S607


class RenewedToken:
    """An access token that is renewed with its refresh token before it expires.

    For runs that outlast JWT_ACCESS_MINUTES under the service's own settings. Threads share
    one; the first to ask once a third of the token's lifetime is left renews it for all (a
    refresh token works once), outside any request it times.
    """

    def __init__(self, base_url: str, tokens: dict[str, str]) -> None:
        self.base_url = base_url
        self.lock = threading.Lock()
        self._take(tokens)

    def access(self) -> str:
        with self.lock:
            if time.time() >= self.renew_at:
                status, body = Api(self.base_url).request(
                    "POST", "/api/token/refresh/", {"refresh": self.refresh}
                )
                if status != 200:
                    raise RuntimeError(f"token refresh failed: {status} {body}")
                self._take(body)
            return self.token

    def _take(self, tokens: dict[str, str]) -> None:
        self.token, self.refresh = tokens["access"], tokens["refresh"]
        claims = _jwt_claims(self.token)
        self.renew_at = claims["exp"] - (claims["exp"] - claims["iat"]) / 3


def _jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: the client only reads when its own token expires."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Api:
    """A small JSON client on one keep-alive connection; use one per thread."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30) -> None:
        self.base_url, self.token = base_url, token
        host_port = base_url.removeprefix("http://")
        self.connection = http.client.HTTPConnection(host_port, timeout=timeout)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.last_used = time.monotonic()

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        if time.monotonic() - self.last_used > IDLE_RECONNECT_SECONDS:
            # gunicorn closes keep-alive connections idle for 2 s; a request sent on one that
            # is closing would fail, so start afresh instead.
            self.connection.close()
        try:
            self.connection.request(method, path, payload, {**self.headers, **(headers or {})})
            response = self.connection.getresponse()
            raw = response.read()
            self.last_used = time.monotonic()
        except (http.client.HTTPException, OSError):
            self.connection.close()  # The next request reconnects.
            raise
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, data

    def close(self) -> None:
        self.connection.close()
