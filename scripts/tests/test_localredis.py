"""The private Redis that `make test` and `make run` rely on, exercised for real."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import localredis

SCRIPT = Path(localredis.__file__)

needs_redis_server = pytest.mark.skipif(
    localredis.find_redis_server() is None, reason="no redis-server binary on this machine"
)


def run_exec(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `localredis.py exec -- COMMAND` as a user would, and capture what it printed."""
    return subprocess.run(  # noqa: S603 - our own script and interpreter.
        [sys.executable, str(SCRIPT), "exec", "--", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_redis_server
def test_private_redis_answers_ping_and_stops_cleanly(tmp_path):
    process, url = localredis.start_redis(None, tmp_path)
    try:
        assert url.startswith("redis://127.0.0.1:")
        assert localredis.redis_answers(url, timeout=1.0)
    finally:
        localredis.stop_redis(process)

    assert process.returncode == 0
    assert not localredis.redis_answers(url, timeout=0.5)


@needs_redis_server
def test_private_redis_persists_nothing(tmp_path):
    process, _url = localredis.start_redis(None, tmp_path)
    localredis.stop_redis(process)

    assert sorted(path.name for path in tmp_path.iterdir()) == [localredis.LOG_FILE_NAME]


def test_redis_answers_is_false_for_a_closed_port():
    port = localredis.free_port()  # Nothing listens there once the probe socket is closed.

    assert not localredis.redis_answers(f"redis://127.0.0.1:{port}/0", timeout=0.5)


def test_redis_answers_refuses_urls_it_cannot_check():
    with pytest.raises(ValueError, match="redis://"):
        localredis.redis_answers("rediss://127.0.0.1:6379/0", timeout=0.5)


@needs_redis_server
def test_exec_runs_the_command_against_a_live_private_redis_and_keeps_its_exit_code():
    # The child proves REDIS_URL answers while it runs, prints it, and exits with 7. A REDIS_URL
    # already in the environment is replaced: a test run never shares a developer's Redis.
    child = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
        "import localredis\n"
        "url = os.environ['REDIS_URL']\n"
        "print(url)\n"
        "sys.exit(7 if localredis.redis_answers(url, timeout=1.0) else 3)\n"
    )
    finished = run_exec(
        sys.executable, "-c", child, env={**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    )

    assert finished.returncode == 7, finished.stderr
    url = finished.stdout.strip()
    assert url.startswith("redis://127.0.0.1:")
    assert url != "redis://127.0.0.1:6379/0"
    assert not localredis.redis_answers(url, timeout=0.5)  # Stopped after the command.


@needs_redis_server
def test_exec_reports_success_as_zero():
    finished = run_exec(sys.executable, "-c", "pass")

    assert finished.returncode == 0, finished.stderr
