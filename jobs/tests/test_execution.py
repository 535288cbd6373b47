"""A worker's side of the state machine, driven through the services (no broker, no worker)."""

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone

from jobs import handlers, services
from jobs.handlers.base import JobInterrupted, RetryableJobError
from jobs.models import Job, JobAttempt, JobResult
from jobs.services import leases, transitions
from jobs.services.leases import LeaseKeeper
from jobs.tests.concurrency import run_together, start_thread
from jobs.tests.live import wait_for

pytestmark = pytest.mark.django_db


def run(job: Job) -> Job:
    """Admit the job, if it waits, and run it as its message would."""
    services.jobs_admit()
    services.job_run(job_id=job.pk, worker="test-worker")
    job.refresh_from_db()
    return job


def test_running_a_job_completes_it_with_one_result(job_factory):
    job = run(job_factory(job_type="checksum", parameters={"text": "abc", "algorithm": "md5"}))

    assert job.status == Job.Status.COMPLETED
    assert job.attempts == 1
    assert job.progress == 100
    assert job.started_at <= job.completed_at
    assert job.result.output["hexdigest"] == "900150983cd24fb0d6963f7d28e17f72"


def test_a_duplicate_message_for_a_finished_job_does_nothing(job_factory):
    job = run(job_factory())
    finished_at = job.completed_at

    job = run(job)

    assert job.attempts == 1
    assert job.completed_at == finished_at
    assert JobResult.objects.filter(job=job).count() == 1


def test_a_claimed_job_cannot_be_claimed_again(job_factory):
    job = job_factory()

    first = services.job_claim(job_id=job.pk, worker="a")
    second = services.job_claim(job_id=job.pk, worker="b")

    assert first is not None
    assert first.worker == "a"
    assert second is None


def test_a_claim_returns_the_job_as_stored_in_one_statement(job_factory, django_assert_num_queries):
    job = job_factory(job_type="word_count", parameters={"text": "a b"})

    # The UPDATE and its job.started event: on PostgreSQL one statement; elsewhere the
    # UPDATE ... RETURNING and the event, between BEGIN and COMMIT. The attempt's row is
    # written when the attempt ends.
    one_statement = connection.vendor in transitions.ONE_STATEMENT_VENDORS
    with django_assert_num_queries(1 if one_statement else 4):
        claimed = services.job_claim(job_id=job.pk, worker="w")

    stored = Job.objects.get(pk=job.pk)
    for field in Job._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(stored, field.attname), field.name
    assert claimed.status == Job.Status.IN_PROGRESS
    assert claimed.parameters == {"text": "a b"}
    assert claimed.attempts == 1


def test_a_job_is_not_claimed_before_its_time(job_factory):
    job = job_factory(run_after=timezone.now() + timedelta(minutes=1))

    assert services.job_claim(job_id=job.pk, worker="early") is None


def test_a_message_that_runs_early_hands_the_job_back_to_the_dispatcher(job_factory):
    due = timezone.now() + timedelta(seconds=30)
    job = job_factory(run_after=due, scheduled_time=due, enqueued_at=timezone.now())

    services.job_run(job_id=job.pk, worker="fast-clock")

    job.refresh_from_db()
    assert (job.status, job.attempts, job.enqueued_at) == (Job.Status.PENDING, 0, None)


def test_a_cancelled_job_is_never_claimed(job_factory):
    job = job_factory(status=Job.Status.CANCELLED)

    job = run(job)

    assert job.status == Job.Status.CANCELLED
    assert job.attempts == 0


def test_a_permanent_error_fails_the_job_at_once(job_factory):
    job = run(job_factory(job_type="fail", parameters={"message": "nope", "retryable": False}))

    assert job.status == Job.Status.FAILED
    assert job.error_message == "nope"
    assert job.attempts == 1
    assert not JobResult.objects.filter(job=job).exists()


def test_a_retryable_error_retries_with_backoff_then_fails(job_factory):
    job = job_factory(
        job_type="fail", parameters={"message": "flaky", "retryable": True}, max_retries=2
    )

    with time_machine.travel(timezone.now(), tick=False) as clock:
        job = run(job)
        assert job.status == Job.Status.PENDING
        assert job.enqueued_at is None  # Beat's dispatcher publishes it when due.
        backoff = job.run_after - timezone.now()
        assert timedelta(seconds=0.25) <= backoff <= timedelta(seconds=0.5)  # fail's base
        assert "Attempt 1 failed: flaky" in job.error_message

        assert services.job_claim(job_id=job.pk, worker="too-early") is None

        clock.shift(backoff)
        job = run(job)
        assert job.status == Job.Status.PENDING
        second_backoff = job.run_after - timezone.now()
        assert timedelta(seconds=0.5) <= second_backoff <= timedelta(seconds=1)

        clock.shift(second_backoff)
        job = run(job)

    assert job.status == Job.Status.FAILED
    assert job.attempts == 3
    assert job.error_message == "flaky"


def test_a_crash_shows_users_a_short_message_and_keeps_the_traceback(job_factory):
    # csv_summary with a header only is valid input; make the handler crash on bad stored data.
    job = job_factory(job_type="primes", parameters={"limit": "not a number"}, max_retries=0)

    job = run(job)

    assert job.status == Job.Status.FAILED
    assert job.error_message == "The job crashed with an internal error (TypeError)."
    assert "Traceback" in job.error_traceback


def test_retry_delay_grows_exponentially_within_jitter_and_is_capped():
    for attempt in range(1, 12):
        ceiling = min(
            settings.JOB_RETRY_BACKOFF_MAX_SECONDS,
            settings.JOB_RETRY_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1),
        )
        delay = services.retry_delay(attempt=attempt).total_seconds()
        assert ceiling / 2 <= delay <= ceiling


def test_a_worker_whose_claim_was_taken_over_writes_nothing(job_factory):
    job = job_factory()
    stale = services.job_claim(job_id=job.pk, worker="stale")
    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)):
        services.jobs_reap_stale()
    job.refresh_from_db()
    job.run_after = timezone.now()
    job.save()
    services.jobs_admit()
    fresh = services.job_claim(job_id=job.pk, worker="fresh")

    assert not services.job_complete(job=stale, output={"from": "stale"}, duration_ms=1)
    with pytest.raises(JobInterrupted):
        services.job_progress_reporter(job=stale, lease=LeaseKeeper(stale))(50)
    services.job_fail_attempt(job=stale, exc=RetryableJobError("late"), trace="")

    job.refresh_from_db()
    assert job.status == Job.Status.IN_PROGRESS
    assert job.worker == "fresh"
    assert job.progress == 0
    assert services.job_complete(job=fresh, output={"from": "fresh"}, duration_ms=1)
    assert JobResult.objects.get(job=job).output == {"from": "fresh"}


def test_progress_after_cancellation_interrupts_the_handler(job_factory):
    job = services.job_claim(job_id=job_factory().pk, worker="w")
    services.job_cancel(job=job)

    with pytest.raises(JobInterrupted):
        services.job_progress_reporter(job=job, lease=LeaseKeeper(job))(10)
    assert not services.job_complete(job=job, output={}, duration_ms=1)
    assert not JobResult.objects.filter(job=job).exists()


@pytest.fixture
def short_lease(settings):
    settings.JOB_LEASE = timedelta(seconds=0.6)  # renewed every 0.2 s
    settings.JOB_HARD_TIMEOUT_GRACE = timedelta(0)
    return settings.JOB_LEASE


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_a_silent_handler_runs(job_factory, short_lease):
    job = services.job_claim(job_id=job_factory().pk, worker="w")

    with LeaseKeeper(job) as lease:
        time.sleep(1.5)  # longer than the lease: without renewals it would have lapsed

    job.refresh_from_db()
    assert lease.stop is None
    assert job.lease_expires_at > job.started_at + timedelta(seconds=1.5)
    assert services.jobs_reap_stale()["requeued"] == 0


@pytest.mark.django_db(transaction=True)
def test_the_watchdog_keeps_its_connection_while_a_job_runs_and_closes_it_after(
    job_factory, short_lease, monkeypatch
):
    closed_at: list[float] = []
    close_all = leases.connections.close_all

    def recording_close_all() -> None:
        if threading.current_thread().name == "job-watchdog":
            closed_at.append(time.monotonic())
        close_all()

    monkeypatch.setattr(leases.connections, "close_all", recording_close_all)
    job = services.job_claim(job_id=job_factory().pk, worker="w")
    # Done with earlier tests' jobs first.
    wait_for(lambda: not leases._watchdog().connected, timeout=2)
    closed_at.clear()

    with LeaseKeeper(job):
        time.sleep(0.5)  # renewals 0.2 s apart: a connection each would be wasted
    done = time.monotonic()

    wait_for(lambda: closed_at, timeout=2, message="the watchdog kept its connection")
    assert all(at > done for at in closed_at)


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_never_renewed_past_the_attempt_deadline(job_factory, short_lease):
    job = services.job_claim(job_id=job_factory(timeout_seconds=1).pk, worker="w")

    with LeaseKeeper(job):
        time.sleep(1.5)

    job.refresh_from_db()
    assert job.lease_expires_at <= job.started_at + timedelta(seconds=1)


@pytest.mark.django_db(transaction=True)
def test_the_lease_keeper_tells_a_silent_handler_its_job_was_cancelled(job_factory, short_lease):
    job = services.job_claim(job_id=job_factory().pk, worker="w")

    with LeaseKeeper(job) as lease:
        services.job_cancel(job=job)
        wait_for(lambda: lease.stop is JobInterrupted, timeout=2)
        with pytest.raises(JobInterrupted):
            services.job_progress_reporter(job=job, lease=lease)(10)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_sleep_job_stops_it_promptly(job_factory):
    job = job_factory(job_type="sleep", parameters={"seconds": 60})

    worker = start_thread(lambda: services.job_run(job_id=job.pk, worker="thread"))
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status=Job.Status.IN_PROGRESS).exists(), timeout=5
    )
    services.job_cancel(job=job)
    worker.join(timeout=3)

    assert not worker.is_alive()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert not JobResult.objects.filter(job=job).exists()


@pytest.mark.django_db(transaction=True)
def test_duplicate_deliveries_at_the_same_moment_give_one_run_and_one_result(job_factory):
    job = job_factory(job_type="word_count", parameters={"text": "a b c", "top": 1})

    run_together(8, lambda: services.job_run(job_id=job.pk, worker="racer"))

    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED
    assert job.attempts == 1
    assert JobResult.objects.filter(job=job).count() == 1
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.SUCCEEDED]


def test_every_attempt_is_recorded_with_its_outcome(job_factory):
    job = job_factory(job_type="fail", parameters={"message": "x", "retryable": True})
    job.max_retries = 1
    job.save()

    with time_machine.travel(timezone.now(), tick=False) as clock:
        run(job)
        clock.shift(timedelta(minutes=10))
        job = run(job)

    attempts = list(job.attempt_log.all())
    assert [(a.number, a.outcome, a.error_message) for a in attempts] == [
        (1, JobAttempt.Outcome.FAILED, "x"),
        (2, JobAttempt.Outcome.FAILED, "x"),
    ]
    assert all(a.started_at <= a.finished_at for a in attempts)
    assert {a.worker for a in attempts} == {"test-worker"}


def test_a_running_attempt_is_shown_from_the_job_and_stored_once_it_ends(
    auth_client, verified_user, job_factory
):
    job = job_factory(owner=verified_user)
    claimed = services.job_claim(job_id=job.pk, worker="w@host")

    running = auth_client.get(f"/api/jobs/{job.pk}/").json()["attempt_history"]
    assert not JobAttempt.objects.filter(job=job).exists()
    assert [(a["number"], a["worker"], a["outcome"]) for a in running] == [(1, "w@host", "running")]

    services.job_complete(job=claimed, output={}, duration_ms=1)
    stored = JobAttempt.objects.get(job=job)
    assert (stored.claim_token, stored.outcome) == (claimed.claim_token, "succeeded")
    assert stored.started_at == claimed.started_at


def test_an_attempt_keeps_its_first_outcome(job_factory):
    job = job_factory(job_type="sleep", parameters={"seconds": 60})
    claimed = services.job_claim(job_id=job.pk, worker="w")

    services.job_cancel(job=job)
    # The worker finds out afterwards and records its view of the same attempt.
    assert not services.job_complete(job=claimed, output={}, duration_ms=1)

    assert [a.outcome for a in JobAttempt.objects.filter(job=job)] == ["cancelled"]


def test_the_job_detail_shows_its_attempts(auth_client, verified_user, job_factory):
    job = run(job_factory(owner=verified_user))

    detail = auth_client.get(f"/api/jobs/{job.pk}/").json()

    assert [(a["number"], a["outcome"]) for a in detail["attempt_history"]] == [(1, "succeeded")]


@pytest.mark.django_db(transaction=True)
def test_a_handler_past_its_time_limit_is_stopped_and_fails_as_timed_out(job_factory):
    # The watchdog reads the job through its own connection: the row must be committed.
    job = job_factory(job_type="sleep", parameters={"seconds": 5}, timeout_seconds=1)

    job = run(job)

    assert job.status == Job.Status.FAILED
    assert job.error_message == "The job ran past its 1s time limit."
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.TIMED_OUT]


def test_a_client_may_lower_the_timeout_but_not_raise_it(auth_client):
    lowered = auth_client.post(
        "/api/jobs/",
        {"name": "t", "job_type": "primes", "parameters": {"limit": 10}, "timeout_seconds": 5},
        format="json",
    )
    raised = auth_client.post(
        "/api/jobs/",
        {"name": "t", "job_type": "primes", "parameters": {"limit": 10}, "timeout_seconds": 10_000},
        format="json",
    )

    assert lowered.status_code == 201
    assert lowered.json()["timeout_seconds"] == 5
    assert raised.status_code == 400
    assert "timeout_seconds" in raised.json()


def test_the_job_type_timeout_applies_when_the_client_gives_none(auth_client):
    created = auth_client.post(
        "/api/jobs/",
        {"name": "t", "job_type": "sleep", "parameters": {"seconds": 1}},
        format="json",
    )

    assert created.json()["timeout_seconds"] == handlers.get("sleep").timeout_seconds


def test_a_job_type_can_set_its_own_backoff(job_factory, settings):
    settings.JOB_RETRY_BACKOFF_BASE_SECONDS = 60  # the default for types that set none
    flaky = job_factory(job_type="fail", parameters={"message": "x", "retryable": True})
    crashing = job_factory(job_type="primes", parameters={"limit": "not a number"})

    with time_machine.travel(timezone.now(), tick=False):
        flaky, crashing = run(flaky), run(crashing)
        fail_backoff = flaky.run_after - timezone.now()
        default_backoff = crashing.run_after - timezone.now()

    assert handlers.get("fail").retry_backoff_seconds == 0.5
    assert timedelta(seconds=0.25) <= fail_backoff <= timedelta(seconds=0.5)
    assert timedelta(seconds=30) <= default_backoff <= timedelta(seconds=60)
