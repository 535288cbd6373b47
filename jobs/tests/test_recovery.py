"""Beat's and shutting-down workers' side: dispatching due jobs and taking back lost ones."""

import logging
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from jobs import handlers, services
from jobs.handlers.base import JobInterrupted
from jobs.models import Job, JobAttempt
from jobs.services import recovery
from jobs.services.leases import LeaseKeeper
from jobs.tests.concurrency import run_together

pytestmark = pytest.mark.django_db


def test_the_dispatcher_publishes_only_due_jobs_without_a_message(job_factory):
    now = timezone.now()
    due = job_factory(run_after=now - timedelta(seconds=1), enqueued_at=None)
    job_factory(run_after=now + timedelta(minutes=1), enqueued_at=None)  # not yet
    job_factory(run_after=now, enqueued_at=now)  # already published

    assert services.jobs_dispatch_due() == 1
    due.refresh_from_db()
    assert due.enqueued_at is not None


def test_the_dispatcher_logs_only_when_it_admitted_something(job_factory, caplog):
    caplog.set_level(logging.INFO, logger="jobs.services.recovery")
    services.jobs_dispatch_due()
    job_factory.create_batch(2, run_after=timezone.now(), enqueued_at=None)
    services.jobs_dispatch_due()

    assert [r.getMessage() for r in caplog.records] == ["dispatcher admitted 2 job(s)"]
    assert caplog.records[0].levelname == "INFO"


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
        assert LeaseKeeper(live).renew()  # a live worker's heartbeat
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
    assert job.error_message == "The worker running attempt 1 was lost."
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.LOST]


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_publish_each_due_job_once(job_factory):
    job_factory.create_batch(20, run_after=timezone.now(), enqueued_at=None)

    counts = run_together(2, services.jobs_dispatch_due)

    assert sorted(counts)[-1] + sorted(counts)[0] == 20


@pytest.mark.django_db(transaction=True)
def test_two_reapers_at_once_republish_and_requeue_each_job_once(job_factory):
    long_ago = timezone.now() - settings.JOB_REDISPATCH_AFTER - timedelta(seconds=1)
    job_factory.create_batch(10, run_after=long_ago, enqueued_at=long_ago)
    for job in job_factory.create_batch(10, max_retries=3):
        services.job_claim(job_id=job.pk, worker="dead")

    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)):
        counts = run_together(2, services.jobs_reap_stale)

    assert sum(c["republished"] for c in counts) == 10
    assert sum(c["requeued"] for c in counts) == 10
    assert JobAttempt.objects.filter(outcome=JobAttempt.Outcome.LOST).count() == 10


def test_the_reaper_fails_a_job_that_ran_past_its_time_limit_as_timed_out(job_factory):
    job = job_factory(timeout_seconds=30, max_retries=0)
    services.job_claim(job_id=job.pk, worker="stuck")

    # The lease is never renewed past the deadline, so it lapses soon after it.
    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)):
        assert services.jobs_reap_stale()["failed"] == 1

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error_message == "The job ran past its 30s time limit."
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.TIMED_OUT]


@pytest.mark.parametrize(("retries_timeouts", "status"), [(False, "failed"), (True, "pending")])
def test_the_reaper_retries_a_timed_out_job_only_if_its_type_retries_timeouts(
    job_factory, monkeypatch, retries_timeouts, status
):
    monkeypatch.setattr(handlers.get("echo"), "retry_on_timeout", retries_timeouts)
    job = job_factory(timeout_seconds=30, max_retries=3)
    services.job_claim(job_id=job.pk, worker="stuck")

    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)):
        services.jobs_reap_stale()

    job.refresh_from_db()
    assert job.status == status
    assert [a.outcome for a in job.attempt_log.all()] == [JobAttempt.Outcome.TIMED_OUT]


def test_a_shutting_down_worker_hands_back_its_jobs_without_using_up_an_attempt(job_factory):
    mine = services.job_claim(job_id=job_factory().pk, worker="leaving@host")
    other = services.job_claim(job_id=job_factory().pk, worker="staying@host")

    assert services.jobs_hand_back(worker="leaving@host", grace_seconds=0) == 1

    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.status == Job.Status.PENDING
    assert (mine.attempts, mine.run_attempts) == (1, 0)
    assert mine.enqueued_at is None  # the dispatcher publishes it within a second
    assert [a.outcome for a in mine.attempt_log.all()] == [JobAttempt.Outcome.HANDED_BACK]
    assert other.status == Job.Status.IN_PROGRESS
    assert services.jobs_dispatch_due() == 1


def test_a_handed_back_job_interrupts_the_handler_still_running_it(job_factory):
    job = services.job_claim(job_id=job_factory().pk, worker="leaving@host")
    services.jobs_hand_back(worker="leaving@host", grace_seconds=0)

    with pytest.raises(JobInterrupted):
        services.job_progress_reporter(job=job, lease=LeaseKeeper(job))(50)
    assert not services.job_complete(job=job, output={}, duration_ms=1)


def test_a_lease_renewed_after_the_reaper_read_it_keeps_the_job(job_factory):
    job = job_factory()
    claimed = services.job_claim(job_id=job.pk, worker="slow@host")
    later = timezone.now() + settings.JOB_LEASE + timedelta(seconds=1)
    lapsed = Job.objects.get(pk=job.pk)  # What the reaper read, lapsed by `later`.
    with time_machine.travel(later, tick=False):
        assert LeaseKeeper(claimed).renew()  # The worker's watchdog, just in time.

        assert recovery._reap(lapsed, now=timezone.now()) is None

    job.refresh_from_db()
    assert job.status == Job.Status.IN_PROGRESS
    assert job.claim_token == claimed.claim_token
    assert not job.attempt_log.exists()
