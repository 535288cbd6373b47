"""Migrations that rewrite rows, run on rows as the code before them wrote them."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def migrate():
    """Migrate the jobs app to a migration and return the models as they stood there."""

    def to(name: str):
        executor = MigrationExecutor(connection)
        executor.migrate([("jobs", name)])
        return executor.loader.project_state([("jobs", name)]).apps

    yield to
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


LATEST = "0012_expiry_indexes"


def test_attempts_numbered_per_run_are_renumbered_for_life(migrate, user_factory):
    old = migrate("0006_attempt_job_no_single_index")
    Job, JobAttempt = old.get_model("jobs", "Job"), old.get_model("jobs", "JobAttempt")
    owner = user_factory()  # users stay migrated: today's model
    start = timezone.now() - timedelta(hours=1)

    def job(status: str, attempts: int, *history: tuple[int, str]):
        job = Job.objects.create(
            owner_id=owner.pk,
            name=status,
            status=status,
            attempts=attempts,
            claim_token=uuid.uuid4() if status == "in_progress" else None,
            lease_expires_at=timezone.now() if status == "in_progress" else None,
        )
        for minute, (number, outcome) in enumerate(history):
            JobAttempt.objects.create(
                job=job,
                number=number,
                outcome=outcome,
                claim_token=uuid.uuid4(),
                started_at=start + timedelta(minutes=minute),
            )
        return job.pk

    retried_twice = job("failed", 1, (1, "failed"), (2, "failed"), (1, "failed"), (1, "failed"))
    handed_back = job("in_progress", 1, (1, "handed_back"))
    retried_not_run = job("pending", 0, (1, "cancelled"))
    retrying_in_run_2 = job("pending", 1, (1, "failed"), (1, "failed"))
    untouched = job("completed", 2, (1, "lost"), (2, "succeeded"))

    new = migrate("0007_attempts_numbered_for_life")
    Job, JobAttempt = new.get_model("jobs", "Job"), new.get_model("jobs", "JobAttempt")

    def numbered(pk) -> tuple:
        job = Job.objects.get(pk=pk)
        history = JobAttempt.objects.filter(job=job).order_by("number")
        return (job.attempts, job.run, job.run_attempts), [(a.number, a.run) for a in history]

    assert numbered(retried_twice) == ((4, 3, 1), [(1, 1), (2, 1), (3, 2), (4, 3)])
    assert numbered(handed_back) == ((2, 1, 1), [(1, 1)])
    assert numbered(retried_not_run) == ((1, 2, 0), [(1, 1)])
    assert numbered(retrying_in_run_2) == ((2, 2, 1), [(1, 1), (2, 2)])
    assert numbered(untouched) == ((2, 1, 2), [(1, 1), (2, 1)])


def test_a_key_used_before_fingerprints_changed_still_returns_its_job(
    migrate, api_client, verified_user
):
    old = migrate("0007_attempts_numbered_for_life")
    body = {"name": "before", "parameters": {"message": "hi"}}
    earlier = old.get_model("jobs", "Job").objects.create(
        owner_id=verified_user.pk,
        name="before",
        parameters={"message": "hi", "data": None},
        max_retries=3,
        timeout_seconds=60,
        idempotency_key="key",
        request_fingerprint="fingerprint of the raw body",
    )

    migrate("0008_idempotency_keys_for_batches")
    migrate(LATEST)  # The API's code needs today's columns.
    api_client.force_authenticate(verified_user)
    again = api_client.post("/api/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="key")

    assert again.status_code == 200
    assert again.json()["id"] == str(earlier.pk)


def test_existing_jobs_get_their_types_queue_and_published_ones_stay_admitted(
    migrate, user_factory
):
    old = migrate("0009_jobresult_output_bytes")
    Job = old.get_model("jobs", "Job")
    owner = user_factory()
    now = timezone.now()
    published = Job.objects.create(owner_id=owner.pk, name="s", job_type="sleep", enqueued_at=now)
    waiting = Job.objects.create(owner_id=owner.pk, name="p", job_type="primes")
    echo = Job.objects.create(owner_id=owner.pk, name="e", job_type="echo")

    new = migrate(LATEST).get_model("jobs", "Job")

    assert new.objects.get(pk=published.pk).queue == "long"
    assert new.objects.get(pk=published.pk).enqueued_at == now
    assert new.objects.get(pk=waiting.pk).queue == "cpu"
    assert new.objects.get(pk=echo.pk).queue == "default"
