"""Pieces every job service shares: the guarded UPDATE, errors, backoff and attempt records."""

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from jobs.models import Job, JobAttempt

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


def transition(jobs: QuerySet[Job], **changes: Any) -> int:
    """Apply a conditional UPDATE and return how many rows it changed."""
    # QuerySet.update() skips auto_now, so every transition stamps updated_at itself.
    return jobs.update(updated_at=timezone.now(), **changes)


def held_by(job: Job) -> QuerySet[Job]:
    """The job, only while the claim this copy of it was loaded with still holds it."""
    return Job.objects.filter(pk=job.pk, status=Job.Status.IN_PROGRESS, claim_token=job.claim_token)


def finish_attempt(
    *, claim_token: uuid.UUID, outcome: str, error_message: str = "", now: datetime | None = None
) -> None:
    """Record how an attempt ended; the first outcome recorded wins."""
    JobAttempt.objects.filter(claim_token=claim_token, outcome=JobAttempt.Outcome.RUNNING).update(
        outcome=outcome,
        finished_at=now or timezone.now(),
        error_message=error_message[:MAX_ERROR_MESSAGE_LENGTH],
    )


def retry_delay(*, attempt: int, base_seconds: float | None = None) -> timedelta:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1), capped."""
    base = settings.JOB_RETRY_BACKOFF_BASE_SECONDS if base_seconds is None else base_seconds
    ceiling = min(settings.JOB_RETRY_BACKOFF_MAX_SECONDS, base * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 (not crypto)


def attempt_deadline(job: Job) -> datetime:
    """When the current attempt runs out of time."""
    return job.started_at + timedelta(seconds=job.timeout_seconds)


def log_fields(job_id: uuid.UUID, job: Job | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"job_id": str(job_id)}
    if job is not None:
        fields.update(job_type=job.job_type, attempt=job.attempts)
    return fields
