"""Pieces every job service shares: errors, backoff, deadlines and log fields."""

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from jobs import handlers
from jobs.models import Job
from users.exceptions import AccountDeleted


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
