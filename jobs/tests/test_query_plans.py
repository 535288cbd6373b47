"""The worker's single-row updates find their row by primary key, whatever the statistics say.

With one partial index on all pending jobs, a claim's WHERE clause matched its condition, and
after statistics were gathered while few jobs were pending, PostgreSQL preferred that index to
the primary key and read the whole backlog on every claim.
"""

import uuid

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job
from jobs.services import admission, transitions

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's planner; SQLite has its own"
)


@pytest.fixture
def backlog_after_quiet_statistics(job_factory, verified_user):
    """500 waiting, admitted and running jobs, with statistics from when all were completed."""
    jobs = job_factory.create_batch(500, owner=verified_user, status=Job.Status.COMPLETED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    ids = [job.pk for job in jobs]
    Job.objects.filter(pk__in=ids[:200]).update(status=Job.Status.PENDING)
    Job.objects.filter(pk__in=ids[200:400]).update(
        status=Job.Status.PENDING, enqueued_at=timezone.now()
    )
    Job.objects.filter(pk__in=ids[400:]).update(
        status=Job.Status.IN_PROGRESS, lease_expires_at=timezone.now(), claim_token=uuid.uuid4()
    )
    return jobs


def plan(sql: str, params) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def compiled(transition, job: Job, **changes) -> tuple[str, list]:
    """The UPDATE the transition runs on `job` with these changes, and its parameters."""
    statement = transitions._compiled(transition, "default", tuple(sorted(changes)), "")
    slots = {
        "id": job.pk,
        transitions.CLAIM_TOKEN.name: job.claim_token,
        transitions.NOW.name: timezone.now(),
    }
    return statement.sql, statement.params_for({**slots, **changes}, connection)


def test_a_claim_uses_the_primary_key(backlog_after_quiet_statistics):
    job = backlog_after_quiet_statistics[0]
    sql, params = compiled(
        transitions.CLAIM,
        job,
        started_at=timezone.now(),
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now(),
        worker="w",
    )

    assert "jobs_job_pkey" in plan(sql, params)


def test_a_fenced_update_uses_the_primary_key(backlog_after_quiet_statistics):
    running = Job.objects.filter(status=Job.Status.IN_PROGRESS).first()

    sql, params = compiled(transitions.PROGRESS, running, progress=5)

    assert "jobs_job_pkey" in plan(sql, params)


def test_admission_the_dispatcher_and_the_reaper_use_their_partial_indexes(
    backlog_after_quiet_statistics,
):
    now = timezone.now()
    scans = {
        "job_awaiting_dispatch": Job.objects.filter(
            status=Job.Status.PENDING, enqueued_at=None, run_after__gt=now, run_after__lte=now
        ).order_by("run_after"),
        "job_admitted": Job.objects.filter(
            status=Job.Status.PENDING, run_after__lte=now, enqueued_at__lt=now, claim_token=None
        ),
        "job_running_lease": Job.objects.filter(
            status=Job.Status.IN_PROGRESS, lease_expires_at__lt=now
        ),
    }

    for index, jobs in scans.items():
        assert index in plan(*jobs.query.sql_with_params()), index


def test_admission_reads_owners_and_their_next_jobs_by_index(backlog_after_quiet_statistics):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    owners = admission.waiting_owners_statement("default", now=timezone.now())
    next_jobs = Job.objects.filter(
        queue="default",
        owner_id=backlog_after_quiet_statistics[0].owner_id,
        status=Job.Status.PENDING,
        enqueued_at=None,
    ).order_by("-priority", "run_after")[:10]

    assert "job_awaiting_admission" in plan(*owners)
    assert "Seq Scan" not in plan(*owners)
    assert "job_awaiting_admission" in plan(*next_jobs.query.sql_with_params())


def test_the_pruner_finds_expired_jobs_by_their_expiry(job_factory, verified_user):
    from datetime import timedelta

    from jobs.services.pruning import expired_jobs

    now = timezone.now()
    job_factory.create_batch(400, owner=verified_user, status=Job.Status.COMPLETED)
    job_factory.create_batch(
        100, owner=verified_user, status=Job.Status.COMPLETED, expires_at=now + timedelta(days=1)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    candidates = expired_jobs(now=now).order_by("expires_at").values("pk")[:1000]

    assert "job_expiring" in plan(*candidates.query.sql_with_params())
