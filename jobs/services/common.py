"""Pieces every job service shares: the guarded UPDATE, errors, backoff and attempt records."""

import random
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from jobs import handlers
from jobs.models import Job, JobAttempt
from users.exceptions import AccountDeleted

MAX_ERROR_MESSAGE_LENGTH = 2000


class JobStateError(Exception):
    """The job is not in a state that allows the requested change."""

    def __init__(self, message: str, *, job: Job) -> None:
        super().__init__(message)
        self.job = job


class IdempotencyConflict(Exception):
    """An Idempotency-Key was used before with a different request."""

    def __init__(self, *, job: Job) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request body. "
            "Use a new key for a new job."
        )
        self.job = job


class TooManyActiveJobs(Exception):
    """The owner already has as many pending and running jobs as one user may."""

    def __init__(self, *, limit: int) -> None:
        super().__init__(
            f"You already have {limit} pending or running jobs, the most one user may have. "
            "Submit more when some have finished."
        )


def raise_if_owner_deleted(owner) -> None:
    """Explain a failed INSERT of an owner's jobs by their account's deletion, if that is it.

    Authentication read the account (or a copy kept for a few seconds) before the INSERT, so
    it can be gone by then; the foreign key then fails.
    """
    if not type(owner)._default_manager.filter(pk=owner.pk).exists():
        raise AccountDeleted


def transition(jobs: QuerySet[Job], **changes: Any) -> int:
    """Apply a conditional UPDATE and return how many rows it changed."""
    # QuerySet.update() skips auto_now, so every transition stamps updated_at itself.
    return jobs.update(updated_at=timezone.now(), **changes)


def update_returning(job_id: uuid.UUID, jobs: QuerySet[Job], **changes: Any) -> Job | None:
    """Apply a conditional UPDATE to the job `job_id` among `jobs`; return it updated, or None.

    One round trip (UPDATE ... RETURNING) where the database has it, instead of an UPDATE
    and a SELECT: claims use it, on the path of every job a worker runs.
    """
    jobs = jobs.filter(pk=job_id)
    changes["updated_at"] = timezone.now()
    connection = connections[jobs.db]
    if connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # RETURNING came in SQLite 3.35; older builds still work, one query slower.
        return Job.objects.get(pk=job_id) if jobs.update(**changes) else None
    query = jobs.query.chain(UpdateQuery)
    query.add_update_values(changes)
    update_sql, params = query.get_compiler(jobs.db).as_sql()
    return job_from_returning(f"{update_sql} RETURNING {JOB_COLUMNS}", params, using=jobs.db)


# Every column of the jobs table, in the order Job.from_db() takes them as attribute names.
JOB_COLUMNS = ", ".join(f'"{field.column}"' for field in Job._meta.concrete_fields)
_JOB_ATTNAMES = [field.attname for field in Job._meta.concrete_fields]


def job_from_returning(
    sql: str, params: Sequence[Any] | Mapping[str, Any], *, using: str = "default"
) -> Job | None:
    """Run a statement that ends in RETURNING JOB_COLUMNS for at most one job; return it.

    What Job.objects.raw() does, less its working out again for every statement which column
    is which field: a third of a claim's CPU (0.30 -> 0.19 ms per claim on PostgreSQL).
    """
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, column, converters in _job_converters(using):
        for convert in converters:
            values[index] = convert(values[index], column, connection)
    return Job.from_db(using, _JOB_ATTNAMES, values)


@cache
def _job_converters(using: str) -> list[tuple[int, Any, list]]:
    """For each column that needs it, the backend's and the field's from-database converters."""
    connection = connections[using]
    columns = [field.get_col(Job._meta.db_table) for field in Job._meta.concrete_fields]
    converters = [
        (
            index,
            column,
            connection.ops.get_db_converters(column) + column.get_db_converters(connection),
        )
        for index, column in enumerate(columns)
    ]
    return [entry for entry in converters if entry[2]]


def held_by(job: Job) -> QuerySet[Job]:
    """The job, only while the claim this copy of it was loaded with still holds it."""
    return Job.objects.filter(pk=job.pk, status=Job.Status.IN_PROGRESS, claim_token=job.claim_token)


def finish_attempt(
    job: Job, *, outcome: str, error_message: str = "", now: datetime | None = None
) -> None:
    """Record how the attempt `job` was claimed for ended; the first outcome recorded wins.

    `job` is a copy loaded while that attempt held it (its claim token, number, worker and
    start). The row is written once, when the attempt ends: while it runs, the job row holds
    all of it (Job.attempt_history shows it from there), so a claim is a single UPDATE.
    """
    attempt = JobAttempt(
        job_id=job.pk,
        number=job.attempts,
        run=job.run,
        claim_token=job.claim_token,
        worker=job.worker,
        started_at=job.started_at,
        finished_at=now or timezone.now(),
        outcome=outcome,
        error_message=error_message[:MAX_ERROR_MESSAGE_LENGTH],
    )
    # A second outcome for the same claim (a worker that finds its job cancelled under it)
    # meets the unique claim token and is dropped.
    JobAttempt.objects.bulk_create([attempt], ignore_conflicts=True)


def retry_delay(*, attempt: int, base_seconds: float | None = None) -> timedelta:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1), capped."""
    base = settings.JOB_RETRY_BACKOFF_BASE_SECONDS if base_seconds is None else base_seconds
    ceiling = min(settings.JOB_RETRY_BACKOFF_MAX_SECONDS, base * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 (not crypto)


def timeout_is_final(job: Job) -> bool:
    """Whether an attempt of `job` that timed out ends the job: unless its type retries them."""
    handler = handlers.find(job.job_type)
    return not (handler and handler.retry_on_timeout)


def attempt_deadline(job: Job) -> datetime:
    """When the current attempt runs out of time."""
    return job.started_at + timedelta(seconds=job.timeout_seconds)


def log_fields(job_id: uuid.UUID, job: Job | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"job_id": str(job_id)}
    if job is not None:
        fields.update(job_type=job.job_type, attempt=job.attempts)
    return fields
