"""Liveness and readiness: answered from heartbeats and short checks, never by asking workers."""

import logging
import signal
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

from job_system import health
from job_system.heartbeats import (
    HEARTBEAT_KEY_PREFIX,
    HEARTBEAT_SET_KEY,
    HEARTBEAT_TTL_SECONDS,
    heartbeat_redis,
    worker_beat,
    worker_gone,
)
from jobs.tests.live import start_worker, wait_for


@pytest.fixture
def broker(settings):
    """An empty Redis database as the broker: no worker of the session beats into it."""
    parts = urlsplit(settings.REDIS_URL)
    settings.CELERY_BROKER_URL = urlunsplit(parts._replace(path="/13"))
    client = heartbeat_redis()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def now(monkeypatch) -> list[float]:
    """The time as the readiness cache sees it, in a list that a test moves forward."""
    now = [1000.0]
    monkeypatch.setattr(health.recent_readiness, "_clock", lambda: now[0])
    return now


@pytest.mark.django_db
def test_readiness_counts_workers_by_their_heartbeats_without_asking_them(api_client, broker):
    # No worker process runs against this broker, so none could answer a ping.
    worker_beat(hostname="one@host")
    worker_beat(hostname="two@host")

    response = api_client.get("/api/health/ready/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok", "workers": 2}


@pytest.mark.django_db
def test_readiness_is_503_with_the_same_body_when_no_heartbeat_is_fresh(api_client, broker):
    worker_beat(hostname="expired@host")
    broker.delete(HEARTBEAT_KEY_PREFIX + "expired@host")  # As Redis does after the TTL.

    response = api_client.get("/api/health/ready/")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "redis": "ok",
        "workers": 0,
    }
    assert broker.smembers(HEARTBEAT_SET_KEY) == set()


@pytest.mark.django_db
def test_a_worker_that_says_it_is_gone_is_not_counted(api_client, broker):
    worker_beat(hostname="leaving@host")
    worker_gone(hostname="leaving@host")

    assert api_client.get("/api/health/ready/").json()["workers"] == 0


@pytest.mark.django_db
def test_the_old_health_address_is_the_readiness_check(api_client, broker):
    worker_beat(hostname="one@host")

    old = api_client.get("/api/health/")
    new = api_client.get("/api/health/ready/")

    assert old.status_code == new.status_code == 200
    assert old.json() == new.json()


def test_liveness_asks_neither_the_database_nor_redis(api_client, settings):
    # No database access is allowed in this test, and nothing listens on port 1.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = api_client.get("/api/health/live/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_each_process_reuses_its_readiness_answer_for_a_moment(api_client, broker, now):
    assert api_client.get("/api/health/ready/").status_code == 503
    worker_beat(hostname="late@host")

    still = api_client.get("/api/health/ready/")
    now[0] += health.READINESS_CACHE_SECONDS
    fresh = api_client.get("/api/health/ready/")

    assert still.status_code == 503
    assert fresh.status_code == 200


def test_one_thread_checks_while_the_others_take_the_last_answer():
    now = [1000.0]
    answers = health.RecentAnswer(clock=lambda: now[0])
    answers.get(lambda: {"status": "old"})
    now[0] += health.READINESS_CACHE_SECONDS
    checking, release = threading.Event(), threading.Event()

    def slow_check():
        checking.set()
        release.wait(10)
        return {"status": "new"}

    checker = threading.Thread(target=answers.get, args=(slow_check,))
    checker.start()
    checking.wait(10)
    meanwhile = answers.get(lambda: pytest.fail("a second check ran at the same time"))
    release.set()
    checker.join(10)

    assert meanwhile == {"status": "old"}
    assert answers.get(lambda: pytest.fail("checked again within the moment")) == {"status": "new"}


@pytest.mark.django_db
def test_readiness_gives_up_on_a_redis_that_does_not_answer(api_client, settings):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # Accepts, never replies.
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        response = api_client.get("/api/health/ready/")

    assert response.status_code == 503
    assert response.json()["redis"] == "error: TimeoutError"
    assert response.json()["workers"] == 0


@pytest.mark.django_db
def test_readiness_gives_up_on_a_database_that_does_not_answer(api_client, broker, monkeypatch):
    worker_beat(hostname="one@host")
    stuck = threading.Event()
    monkeypatch.setattr(health, "_select_one", lambda: stuck.wait(30) and "ok")
    monkeypatch.setattr(health, "DATABASE_TIMEOUT_SECONDS", 0.1)

    try:
        response = api_client.get("/api/health/ready/")
    finally:
        stuck.set()

    assert response.status_code == 503
    assert response.json()["database"] == "error: timeout"


@pytest.mark.django_db
def test_an_unready_answer_is_not_logged_as_an_error(api_client, broker, caplog):
    with caplog.at_level(logging.INFO):
        response = api_client.get("/api/health/")

    assert response.status_code == 503
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.integration
def test_a_worker_beats_while_its_loop_runs_and_stops_at_once_when_it_stops(
    django_db_setup, celery_log_dir
):
    worker = start_worker("beating", celery_log_dir)
    key = HEARTBEAT_KEY_PREFIX + f"beating@{socket.gethostname()}"
    client = heartbeat_redis()
    try:
        assert client.exists(key)
        # A frozen worker (its event loop cannot run) stops beating, and drops out.
        worker.signal_group(signal.SIGSTOP)
        wait_for(lambda: not client.exists(key), timeout=HEARTBEAT_TTL_SECONDS + 5)
        worker.signal_group(signal.SIGCONT)
        wait_for(lambda: client.exists(key), timeout=10)
    finally:
        worker.signal_group(signal.SIGCONT)
        worker.stop()

    assert not client.exists(key)
    assert key.encode() not in client.smembers(HEARTBEAT_SET_KEY)


@pytest.mark.integration
def test_the_housekeeping_worker_runs_no_jobs_and_writes_no_heartbeat(live_housekeeping):
    # It is consuming (its log said so), and a beat comes as soon as a worker consumes.
    key = HEARTBEAT_KEY_PREFIX + f"housekeeping@{socket.gethostname()}"

    assert not heartbeat_redis().exists(key)
