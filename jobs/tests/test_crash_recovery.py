"""Workers that time out, are killed or are told to stop, with real processes and Redis.

Each test that breaks a worker starts its own, listening on a queue of its own, and hands it
the job by publishing there; the session's worker then finishes what was recovered.
"""

import signal
import socket
import uuid

import pytest
from celery import Celery

from job_system.celery import app as celery_app
from jobs import queue, services
from jobs.models import Job, JobAttempt, JobResult
from jobs.tests.live import start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def publish_to(queue_name: str, job: Job) -> None:
    celery_app.send_task(
        queue.RUN_JOB_TASK,
        args=[str(job.pk)],
        queue=queue_name,
        time_limit=job.timeout_seconds + 30,
    )


def wait_for_status(job: Job, *statuses: str, timeout: float = 30) -> Job:
    return wait_for(
        lambda: Job.objects.filter(pk=job.pk, status__in=statuses).first(),
        timeout=timeout,
        message=f"job never reached {statuses}",
    )


@pytest.fixture
def own_queue() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_a_job_past_its_time_limit_is_stopped_and_fails_as_timed_out(live_worker, job_factory):
    job = job_factory(
        job_type="sleep", parameters={"seconds": 30}, timeout_seconds=1, max_retries=0
    )
    queue.publish([queue.message_for(job)])

    job = wait_for_status(job, Job.Status.FAILED, timeout=15)

    assert job.error_message == "The job ran past its 1s time limit."
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.TIMED_OUT]


def test_a_job_of_a_killed_worker_is_taken_back_by_the_reaper_and_completed_elsewhere(
    live_worker, job_factory, celery_log_dir, own_queue
):
    doomed = start_worker(
        "doomed", celery_log_dir, queues=own_queue, env={"JOB_LEASE_SECONDS": "2"}
    )
    job = job_factory(job_type="sleep", parameters={"seconds": 30})
    publish_to(own_queue, job)
    wait_for_status(job, Job.Status.IN_PROGRESS)

    doomed.kill()  # SIGKILL, main process and children: no goodbye, no hand-back
    wait_for(lambda: services.jobs_reap_stale()["requeued"], timeout=10)
    Job.objects.filter(pk=job.pk).update(run_after=job.created_at)  # skip the backoff
    services.jobs_dispatch_due()

    job = wait_for_status(job, Job.Status.COMPLETED, timeout=60)
    assert [a.outcome for a in job.attempt_log.all()] == [
        JobAttempt.Outcome.LOST,
        JobAttempt.Outcome.SUCCEEDED,
    ]
    assert JobResult.objects.filter(job=job).count() == 1


def test_a_worker_told_to_stop_hands_back_its_running_job(
    live_worker, job_factory, celery_log_dir, own_queue
):
    leaving = start_worker(
        "leaving", celery_log_dir, queues=own_queue, env={"WORKER_SHUTDOWN_GRACE_SECONDS": "1"}
    )
    job = job_factory(job_type="sleep", parameters={"seconds": 60})
    publish_to(own_queue, job)
    wait_for_status(job, Job.Status.IN_PROGRESS)

    leaving.process.send_signal(signal.SIGTERM)  # a warm shutdown, as systemd or Docker do

    wait_for_status(job, Job.Status.PENDING, timeout=15)
    leaving.process.wait(timeout=30)  # its handler noticed and stopped; the worker exited
    assert services.jobs_dispatch_due() == 1
    job = wait_for_status(job, Job.Status.IN_PROGRESS, timeout=15)
    # The handed-back attempt keeps its number but did not use up one of the run's retries.
    assert (job.attempts, job.run_attempts) == (2, 1)
    outcomes = [a.outcome for a in job.attempt_history]
    assert outcomes == [JobAttempt.Outcome.HANDED_BACK, JobAttempt.Outcome.RUNNING]
    services.job_cancel(job=job)


def test_a_publish_that_fails_after_commit_is_recovered_by_the_dispatcher(live_worker, job_factory):
    job = job_factory()  # committed, as the API's transaction would have left it
    # A real broker connection that is refused: Redis down as the web process publishes.
    redis_down = Celery("outage", broker="redis://127.0.0.1:1/0", set_as_current=False)
    redis_down.conf.broker_connection_max_retries = 1

    created_updated_at = job.updated_at
    queue.publish([queue.message_for(job)], app=redis_down)

    job.refresh_from_db()
    assert job.enqueued_at is None  # handed back to the dispatcher
    assert job.updated_at > created_updated_at
    assert services.jobs_dispatch_due() == 1
    assert wait_for_status(job, Job.Status.COMPLETED).status == Job.Status.COMPLETED


def test_a_worker_frozen_past_its_lease_loses_its_job_and_writes_nothing_when_it_wakes(
    live_worker, job_factory, celery_log_dir, own_queue
):
    frozen = start_worker(
        "frozen", celery_log_dir, queues=own_queue, env={"JOB_LEASE_SECONDS": "2"}
    )
    job = job_factory(job_type="sleep", parameters={"seconds": 3}, max_retries=1)
    publish_to(own_queue, job)
    wait_for_status(job, Job.Status.IN_PROGRESS)

    # The whole worker stops, as a host that lost its network or a process swapped out would.
    frozen.signal_group(signal.SIGSTOP)
    try:
        wait_for(lambda: services.jobs_reap_stale()["requeued"], timeout=15)
        Job.objects.filter(pk=job.pk).update(run_after=job.created_at)  # skip the backoff
        services.jobs_dispatch_due()
        # The session's worker takes it over, and runs it past the frozen handler's 3 s.
        taken_over = wait_for_status(job, Job.Status.COMPLETED, timeout=60)
    finally:
        frozen.signal_group(signal.SIGCONT)
    # Woken, it learns that the job is no longer its own (its watchdog, or its fenced write of
    # the result), and its task ends.
    hostname = f"frozen@{socket.gethostname()}"
    wait_for(
        lambda: (
            (celery_app.control.inspect([hostname], timeout=1).active() or {}).get(hostname) == []
        ),
        timeout=30,
        message=f"the woken worker never finished its task\n{frozen.log_tail()}",
    )
    assert "job completed" not in frozen.log_path.read_text()
    frozen.stop()

    after = Job.objects.get(pk=job.pk)
    fields = ("status", "worker", "attempts", "progress", "completed_at", "updated_at")
    assert [getattr(after, name) for name in fields] == [
        getattr(taken_over, name) for name in fields
    ]
    attempts = list(after.attempt_log.order_by("number").values_list("outcome", "worker"))
    assert attempts == [
        (JobAttempt.Outcome.LOST, hostname),
        (JobAttempt.Outcome.SUCCEEDED, taken_over.worker),
    ]
    assert JobResult.objects.get(job=job).completed_at == taken_over.completed_at
