"""When a finished job expires: stamped by the transition that finishes it, shown by the API."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from jobs import handlers, services
from jobs.models import Job
from jobs.retention import IDEMPOTENCY_KEY_KEPT
from jobs.tests.test_runs import FAILS_FOR_GOOD, JOBS, run

pytestmark = pytest.mark.django_db


def test_a_job_shows_no_expiry_until_it_finishes(auth_client):
    created = auth_client.post(JOBS, {"name": "a", "parameters": {}}, format="json").json()

    assert created["expires_at"] is None
    run(Job.objects.get(pk=created["id"]))
    shown = auth_client.get(f"{JOBS}{created['id']}/").json()
    assert shown["status"] == "completed"
    expires_at = Job.objects.get(pk=created["id"]).completed_at + timedelta(days=30)
    assert shown["expires_at"] == expires_at.isoformat().replace("+00:00", "Z")


def test_each_final_status_keeps_the_job_its_own_number_of_days(
    verified_user, job_factory, settings
):
    settings.JOB_RETENTION_COMPLETED_DAYS = 3
    settings.JOB_RETENTION_FAILED_DAYS = 5
    settings.JOB_RETENTION_CANCELLED_DAYS = 7
    completed = run(job_factory(owner=verified_user))
    failed = run(job_factory(owner=verified_user, job_type="fail", parameters=FAILS_FOR_GOOD))
    cancelled = services.job_cancel(job=job_factory(owner=verified_user))

    assert completed.expires_at == completed.completed_at + timedelta(days=3)
    assert failed.expires_at == failed.completed_at + timedelta(days=5)
    assert cancelled.expires_at == cancelled.completed_at + timedelta(days=7)


def test_a_reaped_job_expires_only_when_it_fails_for_good(verified_user, job_factory):
    job = job_factory(owner=verified_user, max_retries=0)
    services.jobs_admit()
    claimed = services.job_claim(job_id=job.pk, worker="w@host")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert claimed is not None
    services.jobs_reap_stale()

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.expires_at == job.completed_at + timedelta(days=90)


def test_a_retried_job_loses_its_expiry_until_it_finishes_again(
    auth_client, verified_user, job_factory
):
    job = run(job_factory(owner=verified_user, job_type="fail", parameters=FAILS_FOR_GOOD))
    assert job.expires_at is not None

    retried = auth_client.post(f"{JOBS}{job.pk}/retry/").json()

    assert retried["status"] == "pending"
    assert retried["expires_at"] is None
    assert run(job).expires_at is not None


def test_a_job_type_may_keep_its_jobs_for_another_time(verified_user, job_factory, monkeypatch):
    monkeypatch.setattr(handlers.get("echo"), "retention_days", {"completed": 2})
    echo = run(job_factory(owner=verified_user))
    failed = run(job_factory(owner=verified_user, job_type="fail", parameters=FAILS_FOR_GOOD))
    cancelled = services.job_cancel(job=job_factory(owner=verified_user))

    assert echo.expires_at == echo.completed_at + timedelta(days=2)
    assert failed.expires_at == failed.completed_at + timedelta(days=90)  # not echo's
    assert cancelled.expires_at == cancelled.completed_at + timedelta(days=90)  # not overridden


def test_a_job_holding_an_idempotency_key_is_kept_a_day_from_its_creation(
    verified_user, job_factory, settings
):
    settings.JOB_RETENTION_COMPLETED_DAYS = 0
    created_at = timezone.now() - timedelta(hours=1)
    # Kept a day even though it finished an hour after it was made.
    keyed = run(job_factory(owner=verified_user, idempotency_key="k", created_at=created_at))
    plain = run(job_factory(owner=verified_user, created_at=created_at))

    assert keyed.expires_at == created_at + IDEMPOTENCY_KEY_KEPT
    assert plain.expires_at == plain.completed_at


def test_relabelling_a_finished_job_keeps_its_expiry(verified_user, job_factory):
    from jobs.services import transitions

    job = run(job_factory(owner=verified_user))
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        transitions.apply(transitions.RELABEL, job, name="renamed")

    assert Job.objects.get(pk=job.pk).expires_at == job.expires_at
