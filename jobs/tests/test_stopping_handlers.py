"""Handlers that hold a CPU and never report progress, stopped from outside, in a real worker.

One worker process with a single pool process serves a queue of its own and knows the
test-only job types (jobs.tests.stubborn_handlers), so a job sent after a stuck one can only
run once the stuck one has stopped. Jobs are sent straight to that queue, as the API would
send them to their type's queue.
"""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from job_system.celery import app as celery_app
from jobs import queue, services
from jobs.models import Job, JobAttempt, JobResult
from jobs.tests.live import pool_processes, start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = f"test-stopping-{uuid.uuid4().hex[:8]}"
# Generous bounds on "within about a second": the watchdog checks a running job four times
# a second and gives an interrupted handler half a second; the machine may be busy.
STOPPED_WITHIN = timedelta(seconds=3)


@pytest.fixture(scope="module")
def stubborn_worker(django_db_setup, django_db_blocker, celery_log_dir):
    worker = start_worker(
        "stubborn",
        celery_log_dir,
        queues=QUEUE,
        concurrency=1,
        include="jobs.tests.worker_with_stubborn_handlers",
    )
    yield worker
    worker.stop()


def send(*jobs: Job) -> None:
    """Send the jobs in one message, with a hard time limit far off, as the API would."""
    ids = [str(job.pk) for job in jobs]
    task, args = (queue.RUN_JOB_TASK, ids) if len(ids) == 1 else (queue.RUN_JOBS_TASK, [ids])
    celery_app.send_task(task, args=args, queue=QUEUE, time_limit=300)


def wait_for_status(job: Job, *statuses: str, timeout: float = 30) -> Job:
    return wait_for(
        lambda: Job.objects.filter(pk=job.pk, status__in=statuses).first(),
        timeout=timeout,
        message=f"job {job.job_type} never reached {statuses}",
    )


def cancel_when_running(client, job: Job):
    """Cancel the job through the API once it has run a second; return when that was."""
    wait_for_status(job, Job.Status.IN_PROGRESS)
    time.sleep(1)  # past the first checks: it is a long job now
    cancelled_at = timezone.now()
    assert client.post(f"/api/jobs/{job.pk}/cancel/").status_code == 200
    return cancelled_at


def outcomes(job: Job) -> list[str]:
    return [attempt.outcome for attempt in job.attempt_log.all()]


def test_a_cancelled_regex_hog_stops_within_a_second_and_its_process_runs_the_next_job(
    stubborn_worker, auth_client, verified_user, job_factory
):
    hog = job_factory(owner=verified_user, job_type="test_regex_hog", parameters={})
    following = job_factory(owner=verified_user, job_type="echo")
    send(hog)
    send(following)
    processes = pool_processes(stubborn_worker)

    cancelled_at = cancel_when_running(auth_client, hog)

    following = wait_for_status(following, Job.Status.COMPLETED)
    assert following.started_at - cancelled_at < STOPPED_WITHIN
    hog.refresh_from_db()
    assert (hog.status, outcomes(hog)) == (Job.Status.CANCELLED, [JobAttempt.Outcome.CANCELLED])
    assert pool_processes(stubborn_worker) == processes  # interrupted, not ended


def test_a_regex_hog_past_its_time_limit_fails_as_timed_out_and_the_job_behind_it_runs(
    stubborn_worker, verified_user, job_factory
):
    hog = job_factory(
        owner=verified_user,
        job_type="test_regex_hog",
        parameters={},
        timeout_seconds=1,
        max_retries=3,
    )
    behind = job_factory(owner=verified_user, job_type="echo")
    send(hog, behind)

    behind = wait_for_status(behind, Job.Status.COMPLETED)

    hog.refresh_from_db()
    [attempt] = hog.attempt_log.all()
    assert (hog.status, hog.attempts) == (Job.Status.FAILED, 1)  # a timeout is not retried
    assert hog.error_message == "The job ran past its 1s time limit."
    assert attempt.outcome == JobAttempt.Outcome.TIMED_OUT
    assert attempt.finished_at - attempt.started_at < timedelta(seconds=1) + STOPPED_WITHIN
    assert behind.worker == hog.worker


def test_a_handler_that_swallows_the_cancel_has_its_process_ended_and_replaced(
    stubborn_worker, auth_client, verified_user, job_factory
):
    stubborn = job_factory(owner=verified_user, job_type="test_stubborn", parameters={})
    behind = job_factory(owner=verified_user, job_type="echo")
    send(stubborn, behind)
    processes = pool_processes(stubborn_worker)

    cancelled_at = cancel_when_running(auth_client, stubborn)

    wait_for(lambda: not pool_processes(stubborn_worker) & processes, timeout=10)
    ended_after = timezone.now() - cancelled_at

    def behind_completed() -> bool:
        # Handed back, the job behind it runs once: from its message, which went back to the
        # queue, or from the dispatcher, which Beat runs every second.
        services.jobs_dispatch_due()
        return Job.objects.filter(pk=behind.pk, status=Job.Status.COMPLETED).exists()

    wait_for(behind_completed, timeout=30)
    assert ended_after < STOPPED_WITHIN
    wait_for(lambda: pool_processes(stubborn_worker), timeout=10)  # the pool replaced it
    stubborn.refresh_from_db()
    behind.refresh_from_db()
    assert (stubborn.status, stubborn.attempts) == (Job.Status.CANCELLED, 1)
    assert outcomes(stubborn) == [JobAttempt.Outcome.CANCELLED]
    assert (behind.attempts, JobResult.objects.filter(job=behind).count()) == (1, 1)


def test_a_handler_that_swallows_its_time_limit_is_recorded_as_timed_out_before_its_end(
    stubborn_worker, verified_user, job_factory
):
    stubborn = job_factory(
        owner=verified_user, job_type="test_stubborn", parameters={}, timeout_seconds=1
    )
    following = job_factory(owner=verified_user, job_type="echo")
    send(stubborn)
    send(following)

    stubborn = wait_for_status(stubborn, Job.Status.FAILED)
    following = wait_for_status(following, Job.Status.COMPLETED)

    [attempt] = stubborn.attempt_log.all()
    assert attempt.outcome == JobAttempt.Outcome.TIMED_OUT
    assert stubborn.error_message == "The job ran past its 1s time limit."
    assert "its process was ended here" in stubborn.error_traceback
    assert "stubborn_handlers.py" in stubborn.error_traceback  # where the handler was stuck
    assert attempt.finished_at - attempt.started_at < timedelta(seconds=1) + STOPPED_WITHIN
