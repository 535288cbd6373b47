"""The worker's single-row updates find their row by primary key, whatever the statistics say.

With one partial index on all pending jobs, a claim's WHERE clause matched its condition, and
after statistics were gathered while few jobs were pending, PostgreSQL preferred that index to
the primary key and read the whole backlog on every claim.
"""

import uuid

import pytest
from django.db import connection
from django.utils import timezone

from events.models import Event
from jobs.models import Job, JobAttempt, JobResult
from jobs.services import admission, transitions
from jobs.services.pruning import jobs_prune_expired
from jobs.tests.test_pruning import DAY, deliver_once, later, with_callback
from jobs.tests.test_runs import run
from webhooks.endpoints import endpoint_create
from webhooks.models import Delivery, DeliveryAttempt, Endpoint

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


@pytest.fixture
def expired_job_with_everything(verified_user):
    """A job with a result, an attempt, events, deliveries and a callback."""
    endpoint_create(owner=verified_user, url="https://hooks.example.com/")
    job = run(with_callback(verified_user))
    deliver_once(verified_user)
    return job


def test_every_statement_of_the_pruner_can_use_an_index(expired_job_with_everything):
    """With sequential scans made a last resort, none is left: each has an index to use.

    On a big table a statement without one reads the whole table while it holds its locks;
    on the small tables of a test the planner may prefer a sequential scan, hence the switch.
    """
    statements: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):
        if sql.lstrip().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with later(31 * DAY), connection.execute_wrapper(record):
        assert jobs_prune_expired()["deleted"] == 1
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")

    tables = {sql.split('"')[1] for sql, _ in statements}
    assert {"jobs_jobattempt", "jobs_jobresult", "events_event", "webhooks_delivery"} <= tables
    assert [
        (sql, scanned) for sql, params in statements if "Seq Scan" in (scanned := plan(sql, params))
    ] == []


def test_every_foreign_key_to_a_pruned_table_has_an_index_that_leads_with_it(db):
    """A deleted row makes PostgreSQL look up its referrers; without an index, by a full scan."""
    from django.apps import apps

    pruned = {Job, JobAttempt, JobResult, Event, Endpoint, Delivery, DeliveryAttempt}
    indexed = {}
    with connection.cursor() as cursor:
        for model in apps.get_models():
            table = model._meta.db_table
            leading = {
                constraint["columns"][0]
                for constraint in connection.introspection.get_constraints(cursor, table).values()
                if (constraint["index"] or constraint["unique"]) and constraint["columns"]
            }
            for field in model._meta.concrete_fields:
                if field.remote_field and field.remote_field.model in pruned:
                    indexed[f"{table}.{field.column}"] = field.column in leading

    assert {"jobs_jobattempt.job_id", "webhooks_delivery.event_id"} <= set(indexed)
    assert [column for column, has_index in indexed.items() if not has_index] == []


@pytest.mark.django_db(transaction=True)
def test_a_foreign_key_the_pruner_breaks_fails_its_statement_not_its_commit(
    verified_user, job_factory
):
    """Checked per statement: a COMMIT that ran every check of the batch would hold its locks."""
    from django.db import IntegrityError

    job = run(job_factory(owner=verified_user))
    failed: list[str] = []

    def refer_to_the_job_first(execute, sql, params, many, context):
        if sql.startswith('DELETE FROM "jobs_job"'):
            JobAttempt.objects.create(
                job_id=job.pk, number=99, claim_token=uuid.uuid4(), started_at=timezone.now()
            )
            try:
                return execute(sql, params, many, context)
            except IntegrityError:
                failed.append(sql)
                raise
        return execute(sql, params, many, context)

    with (
        later(31 * DAY),
        connection.execute_wrapper(refer_to_the_job_first),
        pytest.raises(IntegrityError),
    ):
        jobs_prune_expired()

    assert failed
    assert Job.objects.filter(pk=job.pk).exists()
