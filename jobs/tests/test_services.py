"""The job state machine, driven directly through the services (no broker, no worker)."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone

from jobs import services
from jobs.handlers.base import JobInterrupted, RetryableJobError
from jobs.models import Job, JobResult
from jobs.tests.live import wait_for

pytestmark = pytest.mark.django_db


def run(job: Job) -> Job:
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


def test_a_job_is_not_claimed_before_its_time(job_factory):
    job = job_factory(run_after=timezone.now() + timedelta(minutes=1))

    assert services.job_claim(job_id=job.pk, worker="early") is None


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
        assert timedelta(seconds=1) <= backoff <= timedelta(seconds=2)
        assert "Attempt 1 failed: flaky" in job.error_message

        assert services.job_claim(job_id=job.pk, worker="too-early") is None

        clock.shift(backoff)
        job = run(job)
        assert job.status == Job.Status.PENDING
        second_backoff = job.run_after - timezone.now()
        assert timedelta(seconds=2) <= second_backoff <= timedelta(seconds=4)

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
    fresh = services.job_claim(job_id=job.pk, worker="fresh")

    assert not services.job_complete(job=stale, output={"from": "stale"}, duration_ms=1)
    with pytest.raises(JobInterrupted):
        services.job_progress_reporter(job=stale)(50)
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
        services.job_progress_reporter(job=job)(10)
    assert not services.job_complete(job=job, output={}, duration_ms=1)
    assert not JobResult.objects.filter(job=job).exists()


def test_progress_renews_the_lease(job_factory):
    job = services.job_claim(job_id=job_factory().pk, worker="w")
    first_lease = job.lease_expires_at

    with time_machine.travel(timezone.now() + timedelta(seconds=30)):
        services.job_progress_reporter(job=job)(40)

    job.refresh_from_db()
    assert job.progress == 40
    assert job.lease_expires_at >= first_lease + timedelta(seconds=29)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_sleep_job_stops_it_promptly(job_factory):
    job = job_factory(job_type="sleep", parameters={"seconds": 60})

    def work() -> None:
        try:
            services.job_run(job_id=job.pk, worker="thread")
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status=Job.Status.IN_PROGRESS).exists(), timeout=5
    )
    services.job_cancel(job=job)
    worker.join(timeout=3)

    assert not worker.is_alive()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert not JobResult.objects.filter(job=job).exists()


def test_the_dispatcher_publishes_only_due_jobs_without_a_message(job_factory):
    now = timezone.now()
    due = job_factory(run_after=now - timedelta(seconds=1), enqueued_at=None)
    job_factory(run_after=now + timedelta(minutes=1), enqueued_at=None)  # not yet
    job_factory(run_after=now, enqueued_at=now)  # already published

    assert services.jobs_dispatch_due() == 1
    due.refresh_from_db()
    assert due.enqueued_at is not None


def test_a_second_dispatcher_finds_nothing_left_to_publish(job_factory):
    job_factory.create_batch(3, run_after=timezone.now(), enqueued_at=None)

    assert services.jobs_dispatch_due() == 3
    assert services.jobs_dispatch_due() == 0


def test_the_reaper_republishes_pending_jobs_whose_message_was_lost(job_factory):
    long_ago = timezone.now() - settings.JOB_REDISPATCH_AFTER - timedelta(seconds=1)
    lost = job_factory(run_after=long_ago, enqueued_at=long_ago)
    recent = job_factory(enqueued_at=timezone.now())

    assert services.jobs_reap_stale()["republished"] == 1
    assert services.jobs_reap_stale()["republished"] == 0
    lost.refresh_from_db()
    recent.refresh_from_db()
    assert lost.enqueued_at > long_ago


def test_the_reaper_requeues_jobs_of_lost_workers_and_leaves_live_ones(job_factory):
    lost = services.job_claim(job_id=job_factory(max_retries=1).pk, worker="dead")
    live = services.job_claim(job_id=job_factory().pk, worker="alive")

    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)):
        services.job_progress_reporter(job=live)(50)  # renews live's lease
        assert services.jobs_reap_stale() == {"republished": 0, "requeued": 1, "failed": 0}

    lost.refresh_from_db()
    live.refresh_from_db()
    assert lost.status == Job.Status.PENDING
    assert lost.claim_token is None
    assert "was lost" in lost.error_message
    assert live.status == Job.Status.IN_PROGRESS


def test_the_reaper_fails_a_lost_job_that_used_up_its_retries(job_factory):
    job = job_factory(max_retries=0)
    services.job_claim(job_id=job.pk, worker="dead")

    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)):
        assert services.jobs_reap_stale()["failed"] == 1

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error_message == "The worker running this job was lost (1 attempts)."
