"""Job metrics, scraped from /metrics after jobs are submitted and run in this process.

Counters belong to the process and never go back, so each test compares a scrape taken
after with one taken before.
"""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from job_system.tests.scrape import METRICS_TOKEN, scrape, value
from jobs import services
from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def metrics_on(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN


def run(job: Job) -> None:
    services.jobs_admit()
    services.job_run(job_id=job.pk, worker="test-worker")


def test_submitting_a_job_counts_it_as_created_by_type(client, auth_client):
    before = scrape(client)

    response = auth_client.post(
        "/api/jobs/", {"name": "count", "job_type": "word_count", "parameters": {"text": "a b"}}
    )

    assert response.status_code == 201
    after = scrape(client)
    created = {"job_type": "word_count"}
    assert value(after, "jobs_created_total", **created) == (
        value(before, "jobs_created_total", **created) + 1
    )


def test_running_a_job_counts_it_completed_and_observes_run_time_and_queue_wait(
    client, job_factory
):
    job = job_factory(job_type="checksum", parameters={"text": "x", "algorithm": "md5"})
    # Due three seconds ago from now, not from before the factory hashed its owner's password,
    # which on a loaded machine takes seconds of its own.
    job.run_after = timezone.now() - timedelta(seconds=3)
    job.save(update_fields=["run_after"])
    checksum = {"job_type": "checksum"}
    before = scrape(client)

    run(job)

    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        labels |= checksum
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("jobs_completed_total") == 1
    assert grew("jobs_failed_total") == 0
    assert grew("job_run_seconds_count") == 1
    assert grew("job_queue_wait_seconds_count") == 1
    # It became due three seconds before a worker claimed it.
    assert grew("job_queue_wait_seconds_bucket", le="2.5") == 0
    assert grew("job_queue_wait_seconds_bucket", le="5.0") == 1
    assert grew("job_queue_wait_seconds_sum") >= 3


def test_a_job_that_fails_for_good_is_counted_failed_but_a_retried_attempt_is_not(
    client, job_factory
):
    permanent = job_factory(
        job_type="fail", parameters={"message": "no", "retryable": False}, max_retries=3
    )
    retried = job_factory(
        job_type="fail", parameters={"message": "later", "retryable": True}, max_retries=3
    )
    before = scrape(client)

    run(permanent)
    run(retried)

    after = scrape(client)
    labels = {"job_type": "fail"}
    assert value(after, "jobs_failed_total", **labels) == (
        value(before, "jobs_failed_total", **labels) + 1
    )
    # Both attempts ran, and both are in the run-time histogram.
    assert value(after, "job_run_seconds_count", **labels) == (
        value(before, "job_run_seconds_count", **labels) + 2
    )
    retried.refresh_from_db()
    assert retried.status == Job.Status.PENDING


def test_a_job_the_reaper_fails_after_its_last_attempt_is_counted_failed(client, job_factory):
    job = job_factory(job_type="sleep", parameters={"seconds": 1}, max_retries=0)
    services.job_claim(job_id=job.pk, worker="lost-worker")
    before = scrape(client)

    with time_machine.travel(timezone.now() + timedelta(hours=1)):
        assert services.jobs_reap_stale()["failed"] == 1

    after = scrape(client)
    labels = {"job_type": "sleep"}
    assert value(after, "jobs_failed_total", **labels) == (
        value(before, "jobs_failed_total", **labels) + 1
    )


def test_pending_and_running_jobs_are_counted_by_type_from_the_database(client, job_factory):
    job_factory.create_batch(3, job_type="primes", parameters={"limit": 10})
    job_factory(job_type="sleep", parameters={"seconds": 1}, status=Job.Status.IN_PROGRESS)
    job_factory(job_type="sleep", parameters={"seconds": 1}, status=Job.Status.COMPLETED)

    samples = scrape(client)

    assert value(samples, "jobs_pending", job_type="primes") == 3
    assert value(samples, "jobs_in_progress", job_type="sleep") == 1
    # Every type is reported, so a backlog alert does not vanish when its queue empties.
    assert ("jobs_pending", frozenset({"job_type": "echo"}.items())) in samples
    assert value(samples, "jobs_pending", job_type="echo") == 0
