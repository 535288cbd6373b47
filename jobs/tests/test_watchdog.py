"""The watchdog stops handlers from outside them: when their job is cancelled, and at its limit.

Handlers run in the test's main thread, as in a worker's pool process. The watchdog reads the
jobs through its own connection, so these tests commit their rows.
"""

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connections

from jobs import handlers, services
from jobs.handlers.base import JobInterrupted
from jobs.models import Job, JobAttempt, JobResult
from jobs.services.leases import CHECK_INTERVAL_SECONDS, LeaseKeeper, _Watchdog
from jobs.tests.concurrency import start_thread
from jobs.tests.live import wait_for
from jobs.tests.stubborn_handlers import STUBBORN_HANDLERS
from scripts.localredis import free_port

pytestmark = pytest.mark.django_db(transaction=True)

# Generous: the watchdog stops a handler within about half a second, and a silent one would
# otherwise run for minutes.
STOPPED_WITHIN_SECONDS = 5


@pytest.fixture
def stubborn_types(monkeypatch):
    """The test-only job types, for this test."""
    for handler_class in STUBBORN_HANDLERS:
        monkeypatch.setitem(handlers._handlers, handler_class.name, handler_class())


def cancel_once_running(job: Job) -> dict[str, float]:
    """Cancel the job from another thread once it has run a while; return when it did."""
    cancelled: dict[str, float] = {}

    def cancel() -> None:
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, status=Job.Status.IN_PROGRESS).exists(),
            timeout=10,
        )
        time.sleep(0.5)
        # Before the call: it may return after the worker has already stopped the handler.
        cancelled["at"] = time.monotonic()
        services.job_cancel(job=job)

    start_thread(cancel)
    return cancelled


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job_type", ["test_regex_hog", "test_spinner"])
def test_a_silent_cpu_bound_handler_stops_when_its_job_is_cancelled(
    stubborn_types, job_factory, job_type
):
    job = job_factory(job_type=job_type, parameters={})
    cancelled = cancel_once_running(job)

    services.job_run(job_id=job.pk, worker="w")  # returns once the handler stopped

    assert time.monotonic() - cancelled["at"] < STOPPED_WITHIN_SECONDS
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.CANCELLED]
    assert not JobResult.objects.filter(job=job).exists()
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)  # no tick left behind


@pytest.mark.timeout(60)
def test_a_silent_cpu_bound_handler_stops_at_its_time_limit_and_is_not_retried(
    stubborn_types, job_factory
):
    job = job_factory(job_type="test_regex_hog", parameters={}, timeout_seconds=1, max_retries=3)

    services.job_run(job_id=job.pk, worker="w")

    job.refresh_from_db()
    [attempt] = job.attempt_log.all()
    assert (job.status, job.attempts) == (Job.Status.FAILED, 1)
    assert job.error_message == "The job ran past its 1s time limit."
    assert attempt.outcome == JobAttempt.Outcome.TIMED_OUT
    ran = (attempt.finished_at - attempt.started_at).total_seconds()
    assert 1 <= ran < 1 + STOPPED_WITHIN_SECONDS


def test_a_type_that_retries_timeouts_is_retried_after_one(job_factory, monkeypatch):
    monkeypatch.setattr(handlers.get("sleep"), "retry_on_timeout", True)
    job = job_factory(job_type="sleep", parameters={"seconds": 5}, timeout_seconds=1)

    services.job_run(job_id=job.pk, worker="w")

    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert job.error_message == "Attempt 1 failed: The job ran past its 1s time limit. Retrying."
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.TIMED_OUT]


def test_a_handler_in_another_thread_stops_at_its_next_progress_report(job_factory):
    # No signal reaches a thread: the watchdog's verdict waits for the handler's next report.
    job = job_factory(job_type="sleep", parameters={"seconds": 30}, timeout_seconds=1)

    worker = start_thread(lambda: services.job_run(job_id=job.pk, worker="thread"))
    worker.join(timeout=STOPPED_WITHIN_SECONDS)

    assert not worker.is_alive()
    job.refresh_from_db()
    assert (job.status, job.error_message) == (
        Job.Status.FAILED,
        "The job ran past its 1s time limit.",
    )


def test_a_stop_that_comes_during_a_progress_write_waits_for_the_write(job_factory):
    job = services.job_claim(job_id=job_factory().pk, worker="w")
    written = []

    def write_progress(lease: LeaseKeeper) -> None:
        with lease.shielded():
            lease.tell_to_stop(JobInterrupted)  # signals this, the main, thread
            time.sleep(0.1)  # the signal arrives here, and is held back
            written.append(True)

    with LeaseKeeper(job) as lease, lease.handler_running(), pytest.raises(JobInterrupted):
        write_progress(lease)

    assert written == [True]


def test_a_stop_signal_after_the_handler_returned_raises_nothing(job_factory):
    job = services.job_claim(job_id=job_factory().pk, worker="w")

    with LeaseKeeper(job) as lease:
        with lease.handler_running():
            pass
        lease.tell_to_stop(SoftTimeLimitExceeded)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGPROF)
        time.sleep(0.1)

    assert lease.stop is SoftTimeLimitExceeded


@contextlib.contextmanager
def unreachable_database() -> Iterator[None]:
    """Point this thread's connection at a database nothing answers for, then restore it."""
    connection = connections["default"]
    connection.close()
    saved = dict(connection.settings_dict)
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent/folder/db.sqlite3"
    else:
        connection.settings_dict["PORT"] = str(free_port())  # Nothing listens there.
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_a_failed_claim_check_waits_its_interval_instead_of_spinning(job_factory):
    # A check that stayed due made the watchdog's next round start at once: it spun while the
    # database was down, logging a traceback every few milliseconds.
    job = services.job_claim(job_id=job_factory().pk, worker="w")
    keeper = LeaseKeeper(job)
    keeper.running = True  # As handler_running() marks it, without the signals.
    keeper.check_due = time.monotonic()
    watchdog = _Watchdog()  # Not started: its round runs here, on the broken connection.
    watchdog.hold(keeper)

    with unreachable_database():
        watchdog._check_claims([keeper], now=time.monotonic())

    assert keeper.stop is None  # A failed check stops nothing.
    assert watchdog._seconds_to_next_round() > CHECK_INTERVAL_SECONDS / 2
