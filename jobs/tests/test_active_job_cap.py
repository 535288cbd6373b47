"""The cap on a user's pending and running jobs, counted in the database and kept in Redis."""

import time

from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job
from jobs.services import active_cap

JOBS = "/api/jobs/"


def counts_active_jobs(queries: CaptureQueriesContext) -> bool:
    # The count is a SELECT of its own; the INSERT that numbers a job's event counts rows too.
    return any(
        query["sql"].upper().startswith("SELECT") and "COUNT(" in query["sql"].upper()
        for query in queries.captured_queries
    )


def test_the_count_is_taken_once_and_then_added_to(auth_client):
    with CaptureQueriesContext(connection) as first:
        auth_client.post(JOBS, {"name": "a"}, format="json")
    with CaptureQueriesContext(connection) as second:
        auth_client.post(JOBS, {"name": "b"}, format="json")

    assert counts_active_jobs(first)
    assert not counts_active_jobs(second)


def test_jobs_added_since_the_count_still_count(auth_client, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 2
    statuses = [auth_client.post(JOBS, {"name": n}, format="json").status_code for n in "abc"]

    assert statuses == [201, 201, 429]
    assert Job.objects.count() == 2


def test_refused_jobs_do_not_count(auth_client, verified_user, job_factory, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 3
    job_factory.create_batch(2, owner=verified_user)

    refused = auth_client.post("/api/jobs/bulk/", {"jobs": [{"name": "x"}] * 2}, format="json")
    accepted = auth_client.post(JOBS, {"name": "fits"}, format="json")

    assert (refused.status_code, accepted.status_code) == (429, 201)


def test_room_made_by_finished_jobs_shows_at_the_next_count(
    auth_client, verified_user, settings, monkeypatch
):
    monkeypatch.setattr(active_cap, "ACTIVE_COUNT_SECONDS", 1)
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    auth_client.post(JOBS, {"name": "first"}, format="json")
    Job.objects.filter(owner=verified_user).update(status=Job.Status.COMPLETED)

    at_once = auth_client.post(JOBS, {"name": "too soon"}, format="json")
    time.sleep(1.1)
    later = auth_client.post(JOBS, {"name": "later"}, format="json")

    assert (at_once.status_code, later.status_code) == (429, 201)


def test_retrying_cancelled_jobs_cannot_pass_the_cap(
    auth_client, verified_user, job_factory, settings
):
    settings.MAX_ACTIVE_JOBS_PER_USER = 3
    cancelled = job_factory.create_batch(3, owner=verified_user, status=Job.Status.CANCELLED)
    for name in "abc":
        auth_client.post(JOBS, {"name": name}, format="json")

    retries = [auth_client.post(f"{JOBS}{job.pk}/retry/") for job in cancelled]

    assert [r.status_code for r in retries] == [429] * 3
    assert {r.json()["code"] for r in retries} == {"too_many_active_jobs"}
    assert Job.objects.filter(owner=verified_user, status__in=Job.ACTIVE_STATUSES).count() == 3


def test_a_retry_takes_a_place_under_the_cap(auth_client, verified_user, job_factory, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 2
    failed = job_factory(owner=verified_user, status=Job.Status.FAILED)
    auth_client.post(JOBS, {"name": "first"}, format="json")

    retried = auth_client.post(f"{JOBS}{failed.pk}/retry/")
    refused = auth_client.post(JOBS, {"name": "one too many"}, format="json")

    assert (retried.status_code, refused.status_code) == (200, 429)


def test_a_refused_retry_does_not_take_a_place(auth_client, verified_user, job_factory, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    completed = job_factory(owner=verified_user, status=Job.Status.COMPLETED)

    retried = auth_client.post(f"{JOBS}{completed.pk}/retry/")
    created = auth_client.post(JOBS, {"name": "fits"}, format="json")

    assert (retried.status_code, created.status_code) == (409, 201)
