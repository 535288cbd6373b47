"""How long a finished job is kept: the rule its expires_at is stamped by.

A finished job expires its status's retention after it finished (JOB_RETENTION_*_DAYS), or
its type's own retention where the handler sets one (JobHandler.retention_days). A job that
holds an Idempotency-Key is kept at least IDEMPOTENCY_KEY_KEPT after it was created, because
the key lives on the job's row: deleting the job would let the key make a second job. Pending
and running jobs never expire.
"""

from datetime import datetime, timedelta

from django.conf import settings

from jobs import handlers
from jobs.models import Job

# How long a client may repeat a request with its Idempotency-Key and get the same job back.
IDEMPOTENCY_KEY_KEPT = timedelta(hours=24)

# The job's columns the rule reads: none of them ever changes once the job exists.
READS = ("job_type", "created_at", "idempotency_key")

RETENTION_SETTINGS = {
    Job.Status.COMPLETED: "JOB_RETENTION_COMPLETED_DAYS",
    Job.Status.FAILED: "JOB_RETENTION_FAILED_DAYS",
    Job.Status.CANCELLED: "JOB_RETENTION_CANCELLED_DAYS",
}


def retention_for(*, status: str, job_type: str) -> timedelta:
    """How long a job of `job_type` that ended in `status` is kept after it finished."""
    handler = handlers.find(job_type)
    days = handler.retention_days.get(status) if handler else None
    if days is None:
        days = getattr(settings, RETENTION_SETTINGS[status])
    return timedelta(days=days)


def expiry(job: Job, *, status: str, finished_at: datetime) -> datetime | None:
    """When `job`, ending in `status` at `finished_at`, may be deleted; None while it is active."""
    if status not in Job.FINISHED_STATUSES:
        return None
    expires_at = finished_at + retention_for(status=status, job_type=job.job_type)
    if job.idempotency_key:
        expires_at = max(expires_at, job.created_at + IDEMPOTENCY_KEY_KEPT)
    return expires_at
