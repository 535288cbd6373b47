"""Attempt numbers over a job's life, and the runs a manual retry starts."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from jobs import services
from jobs.models import Job

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"
FAILS_FOR_GOOD = {"message": "no", "retryable": False}
FAILS_FOR_NOW = {"message": "not yet", "retryable": True}


def run(job: Job) -> Job:
    services.jobs_admit()
    services.job_run(job_id=job.pk, worker="w@host")
    job.refresh_from_db()
    return job


def history(client, job: Job) -> list[tuple[int, int, str]]:
    detail = client.get(f"{JOBS}{job.pk}/").json()
    return [(a["number"], a["run"], a["outcome"]) for a in detail["attempt_history"]]


def test_attempt_numbers_keep_rising_across_a_retry(auth_client, verified_user, job_factory):
    job = run(job_factory(owner=verified_user, job_type="fail", parameters=FAILS_FOR_GOOD))

    retried = auth_client.post(f"{JOBS}{job.pk}/retry/").json()
    run(job)

    assert (retried["attempts"], retried["run"]) == (1, 2)
    assert history(auth_client, job) == [(1, 1, "failed"), (2, 2, "failed")]
    assert auth_client.get(f"{JOBS}{job.pk}/").json()["attempts"] == 2


def test_a_retry_gives_the_new_run_its_own_retries(auth_client, verified_user, job_factory):
    job = job_factory(owner=verified_user, job_type="fail", parameters=FAILS_FOR_NOW, max_retries=1)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(2):
            job = run(job)
            clock.shift(timedelta(minutes=10))
        assert job.status == Job.Status.FAILED

        auth_client.post(f"{JOBS}{job.pk}/retry/")
        job = run(job)

    assert job.status == Job.Status.PENDING  # attempt 3, the new run's first: one retry left
    assert job.error_message == "Attempt 3 failed: not yet Retrying."
    assert history(auth_client, job) == [(1, 1, "failed"), (2, 1, "failed"), (3, 2, "failed")]


def test_every_way_an_attempt_ends_keeps_the_numbering(auth_client, verified_user, job_factory):
    job = job_factory(owner=verified_user, max_retries=1)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        services.job_claim(job_id=job.pk, worker="leaving@host")
        services.jobs_hand_back(worker="leaving@host", grace_seconds=0)
        services.jobs_admit()
        services.job_claim(job_id=job.pk, worker="dead@host")
        clock.shift(settings.JOB_LEASE + timedelta(seconds=1))
        # Lost, and retried: the handed-back attempt did not use up the run's one retry.
        assert services.jobs_reap_stale()["requeued"] == 1
        clock.shift(timedelta(minutes=10))
        services.jobs_admit()
        services.job_claim(job_id=job.pk, worker="w@host")
        services.job_cancel(job=job)
        auth_client.post(f"{JOBS}{job.pk}/retry/")
        job = run(job)

    assert job.status == Job.Status.COMPLETED
    assert (job.attempts, job.run) == (4, 2)
    assert history(auth_client, job) == [
        (1, 1, "handed_back"),
        (2, 1, "lost"),
        (3, 1, "cancelled"),
        (4, 2, "succeeded"),
    ]
