"""Start the whole service on this machine: `make run`.

Writes a development `.env` on first use, finds a Redis (or starts a private one), migrates,
collects static files, starts the Procfile's processes with honcho and waits until
/api/health/ says the database, Redis and a worker all answer, and the events process answers.
Ctrl-C stops everything it started.

Stdlib only, apart from python-dotenv (the parser settings.py uses, so both read `.env` the
same way); run it with the virtualenv's python.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

if not __package__:  # Run as a file: make the `scripts` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts import localredis
from scripts.metricsdir import empty_metrics_dir

BASE_DIR = Path(__file__).resolve().parent.parent
# ENV_FILE names another file, as it does for settings.py (/dev/null reads none).
ENV_FILE = Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")
ENV_EXAMPLE_FILE = BASE_DIR / ".env.example"
RUN_DIR = BASE_DIR / ".run"
# The virtualenv's bin, without resolving symlinks: that is where honcho, gunicorn and celery are.
VENV_BIN = Path(sys.executable).parent

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The Procfile's job workers: make run is ready once each of them beats.
JOB_WORKERS = ("worker", "worker-long")
READY_TIMEOUT_SECONDS = 60.0
# honcho kills whatever has not stopped 5 s after it sent SIGTERM; this is a last resort.
STOP_TIMEOUT_SECONDS = 30.0


class StartupError(Exception):
    """Something the developer has to fix before the service can start."""


def main() -> int:
    # Until honcho runs, a SIGTERM means the same as Ctrl-C: unwind and clean up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with contextlib.ExitStack() as cleanup:
            returncode = run(cleanup)
    except StartupError as error:
        print(f"\nmake run: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmake run: stopped.")
        return 130
    print("make run: everything it started has stopped.", flush=True)
    return returncode


def run(cleanup: contextlib.ExitStack) -> int:
    """Start everything; whatever is registered on `cleanup` is stopped on the way out."""
    ensure_dotenv()
    env = load_environment()
    ensure_ports_free(env, ["PORT", "EVENTS_PORT", "FLOWER_PORT"])
    redis_note = choose_redis(env, cleanup)
    prepare_database(env)
    empty_metrics_dir(Path(env["PROMETHEUS_MULTIPROC_DIR"]))

    honcho = start_honcho(env)
    cleanup.callback(stop_honcho, honcho)
    stop_requests = forward_stop_signals(honcho)

    health_url = f"{web_address(env)}/api/health/"
    healthy, body = wait_until_healthy(
        health_url, f"{events_address(env)}/api/events/", honcho, stop_requests
    )
    if healthy:
        print_ready(env, redis_note, body)
    elif honcho.poll() is not None and not stop_requests:
        raise StartupError(f"the processes stopped before {health_url} said ok (see above).")
    elif not stop_requests:
        print(
            f"\nmake run: {health_url} is not ok after {READY_TIMEOUT_SECONDS:.0f} s; "
            f"still running. Last answer: {body}",
            flush=True,
        )

    returncode = honcho.wait()
    # Stopping on request is how `make run` normally ends, not a failure.
    return 0 if stop_requests else returncode


# --- .env -----------------------------------------------------------------------------------


def ensure_dotenv() -> None:
    """On first run, write a development `.env`; never touch an existing one."""
    if ENV_FILE.exists():
        return
    if ENV_EXAMPLE_FILE.exists():
        text = ENV_EXAMPLE_FILE.read_text()
    else:
        text = "# Local development settings, written by `make run`.\n"
    development_values = {
        "DEBUG": "true",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FLOWER_BASIC_AUTH": f"flower:{secrets.token_urlsafe(16)}",
    }
    for key, value in development_values.items():
        text = set_dotenv_value(text, key, value)
    # O_EXCL: if another process wrote .env meanwhile, keep theirs. 0600: it holds secrets.
    descriptor = os.open(ENV_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as env_file:
        env_file.write(text)
    source = ENV_EXAMPLE_FILE.name if ENV_EXAMPLE_FILE.exists() else "scratch"
    print(
        f"make run: wrote {ENV_FILE.name} from {source} for development "
        "(DEBUG=true, a new SECRET_KEY and a Flower password). Edit it as you like; "
        "make run never overwrites it.",
        flush=True,
    )


def set_dotenv_value(text: str, key: str, value: str) -> str:
    """Return .env text with KEY=value: replacing the existing assignments, else appended."""
    assignment = re.compile(rf"^[ \t]*(?:export[ \t]+)?{re.escape(key)}[ \t]*=.*$", re.MULTILINE)
    line = f"{key}={value}"
    if assignment.search(text):
        return assignment.sub(lambda _match: line, text)
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}{line}\n"


def load_environment() -> dict[str, str]:
    """Return the children's environment: `.env` values under the real environment's."""
    from_file = {key: value for key, value in dotenv_values(ENV_FILE).items() if value is not None}
    env = {**from_file, **os.environ}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PORT"] = env.get("PORT") or "8000"
    env["EVENTS_PORT"] = env.get("EVENTS_PORT") or "8001"
    env["FLOWER_PORT"] = env.get("FLOWER_PORT") or "5555"
    env["PYTHONUNBUFFERED"] = "1"  # Log lines reach the terminal as they happen.
    # Shared by web and worker processes, so /metrics adds them all up; emptied at each start.
    env["PROMETHEUS_MULTIPROC_DIR"] = env.get("PROMETHEUS_MULTIPROC_DIR") or str(
        RUN_DIR / "prometheus"
    )
    if not env.get("FLOWER_BASIC_AUTH"):
        env["FLOWER_BASIC_AUTH"] = f"flower:{secrets.token_urlsafe(16)}"
        print(
            "make run: FLOWER_BASIC_AUTH is not set; Flower gets a password for this run only: "
            f"{env['FLOWER_BASIC_AUTH']}",
            flush=True,
        )
    return env


# --- Ports and Redis ------------------------------------------------------------------------


def ensure_ports_free(env: dict[str, str], names: list[str]) -> None:
    """Refuse to start when a port is taken: the health check would ask the wrong server."""
    for name in names:
        port = int(env[name])
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise StartupError(
                    f"something already listens on port {port} ({name}). Stop it, or choose "
                    f"another port: {name}=<port> make run"
                )


def choose_redis(env: dict[str, str], cleanup: contextlib.ExitStack) -> str:
    """Use REDIS_URL if it answers, else start a private Redis; return a note for the user."""
    url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    try:
        answers = localredis.redis_answers(url, timeout=1.0)
    except ValueError:
        print(f"make run: cannot check {redact(url)}; using it as it is.", flush=True)
        return redact(url)
    if answers:
        print(f"make run: using the Redis at {redact(url)} (REDIS_URL).", flush=True)
        return redact(url)

    print(f"make run: no Redis answers at {redact(url)}; starting a private one.", flush=True)
    try:
        process, private_url = localredis.start_redis(None, RUN_DIR / "redis")
    except RuntimeError as error:
        raise StartupError(f"{error}\nStart Redis, or set REDIS_URL to one that runs.") from None
    cleanup.callback(stop_private_redis, process)
    env["REDIS_URL"] = private_url
    print(f"make run: private Redis at {private_url}, saved nowhere.", flush=True)
    return f"{private_url} (private: started by make run, discarded when it stops)"


def stop_private_redis(process: subprocess.Popen[bytes]) -> None:
    localredis.stop_redis(process)
    print("make run: private Redis stopped.", flush=True)


# --- Processes ------------------------------------------------------------------------------


def prepare_database(env: dict[str, str]) -> None:
    """Migrate and collect static files, showing output only when a step fails."""
    for step in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        print(f"make run: manage.py {step[0]}", flush=True)
        finished = subprocess.run(  # noqa: S603 - our own interpreter and manage.py.
            [sys.executable, "manage.py", *step, "--verbosity", "0"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if finished.returncode != 0:
            print(finished.stdout + finished.stderr, file=sys.stderr)
            raise StartupError(f"manage.py {step[0]} failed (output above).")


def start_honcho(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the Procfile's processes under honcho."""
    command = [
        str(VENV_BIN / "honcho"),
        *("start", "--procfile", "Procfile"),
        # honcho would read .env itself and let it override the real environment (and so a
        # private REDIS_URL); we have already merged it the way settings.py does.
        *("--env", os.devnull),
    ]
    return subprocess.Popen(  # noqa: S603 - fixed command.
        command,
        cwd=BASE_DIR,
        env=env,
        # Its own session, so that it hears a stop signal once, from us. If we die, the kernel
        # sends it SIGTERM, and it stops its children.
        start_new_session=True,
        preexec_fn=localredis.die_with_parent,
    )


def forward_stop_signals(honcho: subprocess.Popen[bytes]) -> list[int]:
    """Pass SIGINT and SIGTERM on to honcho, which stops its children; return the log."""
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not received:
            print("\nmake run: stopping everything...", flush=True)
        received.append(signum)
        if honcho.poll() is None:
            honcho.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return received


def stop_honcho(honcho: subprocess.Popen[bytes]) -> None:
    """Stop honcho (and so its children) if it still runs, forcefully as a last resort."""
    if honcho.poll() is not None:
        return
    honcho.terminate()
    try:
        honcho.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        print("make run: honcho did not stop; killing it.", file=sys.stderr, flush=True)
        honcho.kill()
        honcho.wait()


# --- Health and the ready message -----------------------------------------------------------


def wait_until_healthy(
    url: str, events_url: str, honcho: subprocess.Popen[bytes], stop_requests: list[int]
) -> tuple[bool, str]:
    """Poll the health endpoint until it says ok; return (healthy, its last answer).

    Ok once both of the Procfile's job workers beat (`worker` and `worker-long`): health
    is ok with one, and jobs of the other's queues would wait. And once the events process
    answers: its 401 to a request without a token says that it serves.
    """
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last_answer = "no answer yet"
    while time.monotonic() < deadline and honcho.poll() is None and not stop_requests:
        status, last_answer = fetch(url)
        if status == 200 and workers_in(last_answer) >= len(JOB_WORKERS):
            events_status, events_answer = fetch(events_url)
            if events_status == 401:
                return True, last_answer
            last_answer = f"the events process at {events_url}: {events_status} {events_answer}"
        time.sleep(1)
    return False, last_answer


def fetch(url: str) -> tuple[int | None, str]:
    """GET a URL; return its status (None if nothing answered) and its body."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http only.
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return None, str(getattr(error, "reason", error))


def workers_in(health_body: str) -> int:
    """The job workers a health answer counts; 0 if it does not say."""
    try:
        return int(json.loads(health_body).get("workers", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


def print_ready(env: dict[str, str], redis_note: str, health_body: str) -> None:
    web = web_address(env)
    lines = [
        "",
        "=" * 72,
        f"Ready: web, events, {' and '.join(JOB_WORKERS)}, housekeeping, webhooks, beat and "
        "flower are running. Ctrl-C stops them all.",
        f"  API         {web}/api/",
        f"  Swagger UI  {web}/api/schema/swagger-ui/",
        f"  ReDoc       {web}/api/schema/redoc/",
        f"  Admin       {web}/admin/  (an account: .venv/bin/python manage.py createsuperuser)",
        f"  Health      {web}/api/health/",
        f"  Events      {events_address(env)}/api/events/  (Server-Sent Events: README, Events)",
        f"  Flower      {web}/flower/  (staff only, with the Admin's login: createsuperuser)",
        f"  Redis       {redis_note}",
        f"  Database    {describe_database(env)}",
        "=" * 72,
        "",
    ]
    print("\n".join(lines), flush=True)


def web_address(env: dict[str, str]) -> str:
    host = loopback_if_wildcard(env.get("WEB_BIND") or "127.0.0.1")
    return f"http://{host}:{env['PORT']}"


def events_address(env: dict[str, str]) -> str:
    host = loopback_if_wildcard(env.get("EVENTS_BIND") or "127.0.0.1")
    return f"http://{host}:{env['EVENTS_PORT']}"


def loopback_if_wildcard(host: str) -> str:
    """A server bound to every address is reached, from here, through the loopback one."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", "[::]"} else host  # noqa: S104


def describe_database(env: dict[str, str]) -> str:
    url = env.get("DATABASE_URL")
    return redact(url) if url else f"SQLite, {BASE_DIR / 'db.sqlite3'}"


def redact(url: str) -> str:
    """Hide the password in a URL before printing it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


if __name__ == "__main__":
    sys.exit(main())
