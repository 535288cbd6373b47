"""The state machine: every write to a job is a named transition, and only transitions write.

The transitions that also insert rows run on PostgreSQL as one statement and elsewhere as a
transaction; the same sequence must leave the same rows either way, and on either database.
"""

import ast
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from events.models import Event
from jobs.models import Job, JobAttempt, JobResult
from jobs.services import transitions as t
from jobs.services.transitions import IllegalTransition, apply, apply_all, apply_returning

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def token(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def claim(job_id: uuid.UUID, *, second: int, claim: uuid.UUID) -> Job:
    """Admit the job if it waits, as admission would, and claim it."""
    waiting = Job.objects.filter(pk=job_id, enqueued_at=None)
    t.apply_all(t.ADMIT, waiting, enqueued_at=at(second), dispatch_token=claim)
    job = apply_returning(
        t.CLAIM,
        job_id,
        now=at(second),
        started_at=at(second),
        claim_token=claim,
        lease_expires_at=at(second + 60),
        worker=f"worker-{claim.int % 1000}",
    )
    assert job is not None
    return job


def run_every_transition(job_factory, owner, base: int = 0) -> list[Job]:
    """One sequence through every transition; return its jobs in order.

    Its tokens are numbered from `base`: an attempt's claim token is unique in the table.
    """

    def token(n: int) -> uuid.UUID:
        return uuid.UUID(int=base + n)

    jobs = [
        job_factory(owner=owner, name=f"job {n}", created_at=T0, run_after=T0, enqueued_at=T0)
        for n in range(5)
    ]
    done, retried, handed, cancelled, waiting = (job.pk for job in jobs)
    failure = {"outcome": JobAttempt.Outcome.FAILED, "error_message": "boom"}

    running = claim(done, second=1, claim=token(1))
    assert apply(t.PROGRESS, running, now=at(2), progress=40) == 1
    assert apply(t.RENEW, running, now=at(2), lease_expires_at=at(62)) == 1
    output = {"words": 2}
    result = {"output": output, "output_bytes": 12, "duration_ms": 5}
    assert apply(t.COMPLETE, running, now=at(3), completed_at=at(3), record=result) == 1

    running = claim(retried, second=1, claim=token(2))
    assert apply(
        t.RETRY_LATER,
        running,
        now=at(2),
        record=failure,
        run_after=at(3),
        error_message="Attempt 1 failed: boom Retrying.",
        error_traceback="trace 1",
    )
    running = claim(retried, second=3, claim=token(3))
    assert apply(
        t.FAIL,
        running,
        now=at(4),
        record=failure,
        completed_at=at(4),
        error_message="boom",
        error_traceback="trace 2",
    )
    assert apply(t.RERUN, retried, now=at(5), run_after=at(5), enqueued_at=at(5)) == 1

    running = claim(handed, second=1, claim=token(4))
    assert apply(t.HAND_BACK, running, now=at(2), run_after=at(2), error_message="back") == 1
    running = claim(handed, second=3, claim=token(5))
    lost = {"outcome": JobAttempt.Outcome.LOST, "error_message": "lost"}
    assert apply(
        t.REAP,
        running,
        now=at(70),
        record=lost,
        status=Job.Status.PENDING,
        run_after=at(75),
        enqueued_at=None,
        claim_token=None,
        error_message="lost Retrying.",
    )

    running = claim(cancelled, second=1, claim=token(6))
    assert apply(t.CANCEL, cancelled, now=at(2), completed_at=at(2)) == 1
    # The worker finishes after the cancel: its claim no longer holds the job.
    assert apply(t.COMPLETE, running, now=at(3), completed_at=at(3), record=result) == 0

    admitted = Job.objects.filter(pk=waiting)
    assert apply_all(t.ADMIT, admitted, enqueued_at=at(1), dispatch_token=token(7)) == 1
    assert apply_all(t.RELEASE, admitted) == 1
    assert apply(t.RELABEL, waiting, now=at(2), name="renamed", description="new") == 1
    assert apply(t.CANCEL, waiting, now=at(3), completed_at=at(3)) == 1
    return jobs


JOB_FIELDS = [
    "name",
    "description",
    "status",
    "progress",
    "attempts",
    "run",
    "run_attempts",
    "error_message",
    "error_traceback",
    "started_at",
    "completed_at",
    "run_after",
    "enqueued_at",
    "dispatch_token",
    "claim_token",
    "lease_expires_at",
    "worker",
    "expires_at",
]
ATTEMPT_FIELDS = [
    "number",
    "run",
    "claim_token",
    "worker",
    "started_at",
    "finished_at",
    "outcome",
    "error_message",
]
EVENT_FIELDS = ["seq", "type", "status", "attempt", "progress", "waiting_for", "created_at"]


def rows_of(jobs: list[Job], base: int = 0) -> list[dict]:
    """What the jobs' rows hold in jobs_job, jobs_jobresult and jobs_jobattempt, by position.

    Tokens are numbered back from `base`, as run_every_transition() numbered them.
    """

    def numbered(value):
        return token(value.int - base) if isinstance(value, uuid.UUID) else value

    rows = []
    for job in jobs:
        job.refresh_from_db()
        results = JobResult.objects.filter(job=job).values(
            "output", "output_bytes", "completed_at", "duration_ms"
        )
        attempts = JobAttempt.objects.filter(job=job).order_by("number").values(*ATTEMPT_FIELDS)
        told = Event.objects.filter(job=job).order_by("seq").values(*EVENT_FIELDS)
        rows.append(
            {
                "events": list(told),
                "job": {name: numbered(getattr(job, name)) for name in [*JOB_FIELDS, "updated_at"]},
                "results": list(results),
                "attempts": [
                    {name: numbered(value) for name, value in attempt.items()}
                    for attempt in attempts
                ],
            }
        )
    return rows


def test_the_sequence_leaves_the_rows_it_should(job_factory, verified_user):
    """The same expectations on SQLite (a transaction) and PostgreSQL (one statement)."""
    done, retried, handed, cancelled, waiting = rows_of(
        run_every_transition(job_factory, verified_user)
    )

    assert done["job"] | {"updated_at": None} == {
        **done["job"],
        "status": "completed",
        "progress": 100,
        "attempts": 1,
        "run_attempts": 1,
        "completed_at": at(3),
        "lease_expires_at": None,
        "claim_token": token(1),
        "updated_at": None,
        "expires_at": at(3) + timedelta(days=30),
    }
    assert done["job"]["updated_at"] == at(3)
    assert done["results"] == [
        {"output": {"words": 2}, "output_bytes": 12, "completed_at": at(3), "duration_ms": 5}
    ]
    assert [(a["claim_token"], a["outcome"], a["finished_at"]) for a in done["attempts"]] == [
        (token(1), "succeeded", at(3))
    ]
    assert (retried["job"]["status"], retried["job"]["run"], retried["job"]["attempts"]) == (
        "pending",
        2,
        2,
    )
    assert [(a["claim_token"], a["outcome"]) for a in retried["attempts"]] == [
        (token(2), "failed"),
        (token(3), "failed"),
    ]
    assert (handed["job"]["status"], handed["job"]["run_attempts"]) == ("pending", 1)
    assert [a["outcome"] for a in handed["attempts"]] == ["handed_back", "lost"]
    assert cancelled["job"]["status"] == "cancelled"
    assert cancelled["job"]["expires_at"] == at(2) + timedelta(days=90)
    assert (retried["job"]["expires_at"], handed["job"]["expires_at"]) == (None, None)
    assert [(a["claim_token"], a["outcome"]) for a in cancelled["attempts"]] == [
        (token(6), "cancelled")
    ]
    assert cancelled["results"] == []
    assert waiting["job"]["name"] == "renamed"
    assert (waiting["job"]["enqueued_at"], waiting["attempts"]) == (None, [])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement on PostgreSQL only")
def test_one_statement_and_a_transaction_leave_identical_rows(
    job_factory, verified_user, user_factory, monkeypatch
):
    in_one_statement = rows_of(run_every_transition(job_factory, verified_user))
    monkeypatch.setattr(t, "ONE_STATEMENT_VENDORS", frozenset())
    in_a_transaction = rows_of(run_every_transition(job_factory, user_factory(), 1000), 1000)

    assert in_a_transaction == in_one_statement


def snapshot(job: Job) -> tuple:
    row = Job.objects.filter(pk=job.pk).values().get()
    return (
        row,
        JobResult.objects.filter(job=job).count(),
        JobAttempt.objects.filter(job=job).count(),
    )


def test_an_illegal_transition_writes_nothing(job_factory):
    pending = job_factory()
    completed = job_factory(status=Job.Status.COMPLETED, claim_token=uuid.uuid4())
    running = job_factory(status=Job.Status.IN_PROGRESS, claim_token=uuid.uuid4())
    before = [snapshot(job) for job in (pending, completed, running)]
    now = timezone.now()
    pending.claim_token = uuid.uuid4()  # As a worker that thinks it holds it would.
    result = {"output": {}, "output_bytes": 2, "duration_ms": 1}

    assert apply(t.COMPLETE, pending, completed_at=now, record=result) == 0
    assert apply(t.CANCEL, completed.pk, completed_at=now) == 0
    assert apply(t.RERUN, running.pk, run_after=now, enqueued_at=None) == 0
    assert apply(t.RENEW, completed, lease_expires_at=now) == 0
    assert apply_returning(t.CLAIM, completed.pk, **claim_values(now)) is None
    # A claim before the job is due.
    assert (
        apply_returning(
            t.CLAIM, pending.pk, now=pending.run_after - timedelta(seconds=1), **claim_values(now)
        )
        is None
    )
    assert apply_all(t.RELEASE, Job.objects.filter(pk=running.pk)) == 0
    # Another claim's copy of the running job.
    stale = Job.objects.get(pk=running.pk)
    stale.claim_token = uuid.uuid4()
    assert apply(t.PROGRESS, stale, progress=50) == 0

    assert [snapshot(job) for job in (pending, completed, running)] == before


def claim_values(now: datetime) -> dict:
    return {
        "started_at": now,
        "claim_token": uuid.uuid4(),
        "lease_expires_at": now + settings.JOB_LEASE,
        "worker": "w",
    }


@pytest.mark.parametrize(
    "attempt",
    [
        lambda job: apply(t.PROGRESS, job, status=Job.Status.COMPLETED),  # not its to write
        lambda job: apply(t.PROGRESS, job.pk, progress=5),  # no claim to fence by
        lambda job: apply(t.REAP, job, record={"outcome": "lost", "error_message": ""}),
        lambda job: apply(t.FAIL, job, completed_at=timezone.now()),  # no attempt record
        lambda job: apply(t.RENEW, job, lease_expires_at=job.lease_expires_at, record={"x": 1}),
        lambda job: apply_all(t.CLAIM, Job.objects.all()),  # one job at a time
        lambda job: apply(t.CREATE, job.pk),
    ],
)
def test_a_write_the_table_does_not_have_is_refused(job_factory, attempt):
    job = job_factory(status=Job.Status.IN_PROGRESS, claim_token=uuid.uuid4())
    before = snapshot(job)

    with pytest.raises(IllegalTransition):
        attempt(job)

    assert snapshot(job) == before


def test_a_new_job_must_start_pending(verified_user):
    job = Job(owner=verified_user, name="x", status=Job.Status.COMPLETED)

    with pytest.raises(IllegalTransition):
        t.job_insert(job)

    assert not Job.objects.exists()


# Writes to the jobs table: QuerySet and model methods that write, and raw SQL.
WRITING_METHODS = {"update", "save", "bulk_update", "bulk_create", "update_or_create"}
WRITING_SQL = ("UPDATE jobs_job ", 'UPDATE "jobs_job"', "INSERT INTO jobs_job ")
ROOT = Path(settings.BASE_DIR)
# Calls that share a writing method's name but write no job: (module, the receiver's code).
NOT_JOB_WRITES = {
    ("jobs/services/common.py", "fields"),
    ("job_system/logging.py", "entry"),
    ("jobs/queue.py", "self._admit"),  # A set of queue names.
    # Admission's own tables: the owners' places in the fair order, and each queue's clock.
    ("jobs/services/admission.py", "turns"),
    ("jobs/services/admission.py", "FairShare.objects"),
    ("jobs/services/admission.py", "QueueClock.objects"),
    # The pruner clears other tables' nullable references to the jobs it deletes.
    ("jobs/services/pruning.py", "references"),
}


def service_modules() -> list[Path]:
    """Every module of the service, less its tests, migrations and the transitions."""
    modules = []
    for package in ("jobs", "job_system", "users"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if "tests" in parts or "migrations" in parts or path.name == "transitions.py":
                continue
            modules.append(path)
    return modules


def job_writes(name: str, source: str) -> list[str]:
    """The places in a module's source that could write the jobs table."""
    found = [f"{name}: {sql!r}" for sql in WRITING_SQL if sql.lower() in source.lower()]
    if "Job" not in source:
        return found  # No job model in reach: a user's or a code's writes.
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = ast.get_source_segment(source, node.func.value)
        if node.func.attr in WRITING_METHODS and (name, receiver) not in NOT_JOB_WRITES:
            found.append(f"{name}:{node.lineno}: {receiver}.{node.func.attr}()")
    return found


def test_only_the_transitions_module_writes_jobs():
    modules = service_modules()

    found = [
        place
        for path in modules
        for place in job_writes(str(path.relative_to(ROOT)), path.read_text())
    ]

    assert found == []
    assert len(modules) > 20  # The scan saw the service.


@pytest.mark.parametrize(
    "source",
    [
        "Job.objects.filter(pk=job_id).update(status='failed')",
        "job.save(update_fields=['status'])",
        "Job.objects.bulk_update(jobs, ['status'])",
        "cursor.execute('UPDATE jobs_job SET status = %s', ['failed'])",
    ],
)
def test_the_scan_finds_a_write_to_jobs(source):
    assert job_writes("jobs/example.py", f"from jobs.models import Job\n{source}\n")
