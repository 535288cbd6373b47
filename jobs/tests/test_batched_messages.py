"""Quick jobs published together share broker messages, and a worker runs them in turn."""

import uuid
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from jobs import queue, services
from jobs.handlers.echo import Echo
from jobs.models import Job, JobAttempt
from jobs.tests.live import take_queue

HARD_GRACE = settings.JOB_HARD_TIMEOUT_GRACE.total_seconds()


def test_quick_due_jobs_share_messages_and_the_rest_go_alone(job_factory, settings):
    settings.JOB_MESSAGE_BATCH_SIZE = 20
    # The suite's Redis is shared by its tests: an earlier one's web process may have left a
    # message behind. Only this test's own messages are counted.
    take_queue("default")
    take_queue("long")
    quick = [job_factory(job_type="echo", timeout_seconds=10) for _ in range(45)]
    soon = job_factory(job_type="echo", run_after=timezone.now() + timedelta(minutes=1))
    long = [job_factory(job_type="sleep", parameters={"seconds": 1}) for _ in range(2)]

    queue.publish([queue.message_for(job) for job in [*quick, soon, *long]])

    default = take_queue("default")
    batches = [args[0] for headers, args in default if headers["task"] == queue.RUN_JOBS_TASK]
    assert batches == [[str(job.pk) for job in quick[n : n + 20]] for n in (0, 20, 40)]
    batch_limits = [h["timelimit"] for h, _ in default if h["task"] == queue.RUN_JOBS_TASK]
    assert batch_limits == [[n * (10 + HARD_GRACE), None] for n in (20, 20, 5)]  # hard, soft
    [(eta_headers, eta_args)] = [m for m in default if m[0]["task"] == queue.RUN_JOB_TASK]
    assert (eta_args, eta_headers["eta"] is not None) == ([str(soon.pk)], True)
    # No soft limit: the worker's watchdog stops the handler at the job's limit.
    assert eta_headers["timelimit"] == [soon.timeout_seconds + HARD_GRACE, None]
    assert sorted(args for _, args in take_queue("long")) == sorted([str(j.pk)] for j in long)


def test_quick_jobs_due_at_one_moment_share_a_message_with_that_eta(
    job_factory, settings, verified_user
):
    # A minute's schedules: their jobs are published together ahead of the same instant.
    settings.JOB_MESSAGE_BATCH_SIZE = 20
    settings.JOB_DISPATCH_LOOKAHEAD_SECONDS = 60  # Still ahead, however slow the test.
    take_queue("default")
    # One owner: a new owner per job hashed a password each, and on a loaded machine the 26
    # took longer than the 30 s the jobs were scheduled ahead.
    at = timezone.now() + timedelta(seconds=30)
    together = [job_factory(job_type="echo", run_after=at, owner=verified_user) for _ in range(25)]
    jittered = job_factory(
        job_type="echo", run_after=at + timedelta(milliseconds=1), owner=verified_user
    )

    queue.publish([queue.message_for(job) for job in [*together, jittered]])

    default = take_queue("default")
    shared = [(h["eta"], args[0]) for h, args in default if h["task"] == queue.RUN_JOBS_TASK]
    batches = [[str(job.pk) for job in together[n : n + 20]] for n in (0, 20)]
    assert [ids for _, ids in shared] == batches
    assert {datetime.fromisoformat(eta) for eta, _ in shared} == {at}
    [(eta, args)] = [(h["eta"], args) for h, args in default if h["task"] == queue.RUN_JOB_TASK]
    assert (datetime.fromisoformat(eta), args) == (jittered.run_after, [str(jittered.pk)])


def test_a_batch_size_of_one_gives_every_job_its_own_message(job_factory, settings):
    settings.JOB_MESSAGE_BATCH_SIZE = 1
    jobs = [job_factory(job_type="echo") for _ in range(3)]

    queue.publish([queue.message_for(job) for job in jobs])

    assert [h["task"] for h, _ in take_queue("default")] == [queue.RUN_JOB_TASK] * 3


def run_in_turn(*jobs: Job) -> list[Job]:
    services.jobs_run_in_turn(job_ids=[job.pk for job in jobs], worker="test-worker")
    for job in jobs:
        job.refresh_from_db()
    return list(jobs)


def test_jobs_of_one_message_run_in_turn_and_a_cancelled_one_is_skipped(job_factory):
    first, cancelled, last = [job_factory(job_type="echo") for _ in range(3)]
    services.job_cancel(job=cancelled)

    first, cancelled, last = run_in_turn(first, cancelled, last)

    assert [job.status for job in (first, cancelled, last)] == [
        "completed",
        "cancelled",
        "completed",
    ]
    assert first.started_at <= first.completed_at <= last.started_at
    assert not cancelled.attempt_log.exists()


def test_after_a_job_is_taken_over_the_rest_go_back_to_the_dispatcher(job_factory, monkeypatch):
    run = Echo.run

    def taken_over_while_running(self, params, progress):
        if params["message"] == "taken over":
            # As the reaper does with a lapsed lease, or a stopping worker with its jobs.
            job = Job.objects.get(status=Job.Status.IN_PROGRESS)
            Job.objects.filter(pk=job.pk).update(claim_token=uuid.uuid4())
            progress(50)
        return run(self, params, progress)

    monkeypatch.setattr(Echo, "run", taken_over_while_running)
    now = timezone.now()
    taken = job_factory(job_type="echo", parameters={"message": "taken over", "data": None})
    rest = [job_factory(job_type="echo", enqueued_at=now) for _ in range(2)]

    taken, *rest = run_in_turn(taken, *rest)

    assert [a.outcome for a in taken.attempt_log.all()] == [JobAttempt.Outcome.SUPERSEDED]
    assert [(job.status, job.enqueued_at, job.attempts) for job in rest] == [
        ("pending", None, 0)
    ] * 2


@pytest.mark.django_db(transaction=True)  # The watchdog reads the jobs on its own connection.
def test_each_job_of_a_message_gets_its_own_time_limit(job_factory):
    slow = job_factory(
        job_type="sleep", parameters={"seconds": 5}, timeout_seconds=1, max_retries=0
    )
    quick = job_factory(job_type="echo")

    slow, quick = run_in_turn(slow, quick)

    assert slow.error_message == "The job ran past its 1s time limit."
    assert [a.outcome for a in slow.attempt_log.all()] == [JobAttempt.Outcome.TIMED_OUT]
    assert quick.status == Job.Status.COMPLETED
