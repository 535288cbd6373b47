"""What a worker does with a job: claim it, keep its lease, run its handler, record the outcome.

Every write after the claim is fenced by the claim token, so a worker whose lease was taken
over (or whose job was cancelled) writes nothing: no progress, no result, no failure.
"""

import json
import logging
import traceback
import uuid
from time import monotonic
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from job_system.logging import bind_job, job_log_scope
from jobs import handlers, metrics
from jobs.handlers.base import (
    JobHandler,
    JobInterrupted,
    PermanentJobError,
    Progress,
    RetryableJobError,
)
from jobs.models import Job, JobAttempt, JobResult
from jobs.services.common import (
    MAX_ERROR_MESSAGE_LENGTH,
    finish_attempt,
    held_by,
    log_fields,
    retry_delay,
    transition,
    update_returning,
)
from jobs.services.leases import LeaseKeeper
from jobs.services.recovery import job_hand_back_if_early

logger = logging.getLogger(__name__)

# How often a running job may write progress; each write also notices a cancellation, so this
# bounds how long a cancelled handler keeps running.
PROGRESS_WRITE_INTERVAL_SECONDS = 0.5


class JobTimedOut(RetryableJobError):
    """The attempt ran past the job's time limit."""


def job_claim(*, job_id: uuid.UUID, worker: str) -> Job | None:
    """Mark a due pending job as in progress; return None if it is not ours to run."""
    now = timezone.now()
    # One statement, so no transaction: the attempt's row is written when it ends.
    job = update_returning(
        job_id,
        Job.objects.filter(status=Job.Status.PENDING, run_after__lte=now),
        status=Job.Status.IN_PROGRESS,
        claim_token=uuid.uuid4(),
        lease_expires_at=now + settings.JOB_LEASE,
        started_at=now,
        attempts=F("attempts") + 1,
        progress=0,
        worker=worker[:255],
    )
    if job is not None:
        metrics.job_claimed(job)
    return job


@job_log_scope
def job_run(*, job_id: uuid.UUID, worker: str) -> None:
    """Claim a job, run its handler and record the outcome. A duplicate message does nothing."""
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        if job_hand_back_if_early(job_id=job_id):
            logger.warning(
                "job arrived before its time; back to the dispatcher", extra=log_fields(job_id)
            )
        else:
            logger.info("job not claimed (taken or finished)", extra=log_fields(job_id))
        return
    bind_job(job)
    try:
        handler = handlers.get(job.job_type)
    except KeyError:
        unknown = PermanentJobError(f"Unknown job type {job.job_type!r}.")
        job_fail_attempt(job=job, exc=unknown, trace="")
        return
    with LeaseKeeper(job) as lease:
        _run_handler(job, handler, lease)


def _run_handler(job: Job, handler: JobHandler, lease: LeaseKeeper) -> None:
    log = log_fields(job.pk, job)
    logger.info("job started", extra=log)
    started = monotonic()
    try:
        output = handler.run(job.parameters, job_progress_reporter(job=job, lease=lease))
        json.dumps(output)  # A result must be JSON; find out here, not half-way into a write.
    except JobInterrupted:
        logger.info("job interrupted: cancelled or taken over", extra=log)
        _record_interruption(job)
    except SoftTimeLimitExceeded:
        logger.warning("job ran past its %ss time limit", job.timeout_seconds, extra=log)
        timed_out = JobTimedOut(f"The job ran past its {job.timeout_seconds}s time limit.")
        job_fail_attempt(job=job, exc=timed_out, trace=traceback.format_exc())
    except Exception as exc:
        logger.warning("job attempt failed: %s", exc, extra=log)
        job_fail_attempt(job=job, exc=exc, trace=traceback.format_exc())
    else:
        duration_ms = int((monotonic() - started) * 1000)
        if job_complete(job=job, output=output, duration_ms=duration_ms):
            logger.info("job completed in %d ms", duration_ms, extra=log)
        else:
            logger.info("job finished but was cancelled or taken over; result dropped", extra=log)
    finally:
        metrics.job_attempt_ran(job, seconds=monotonic() - started)


def job_progress_reporter(*, job: Job, lease: LeaseKeeper | None = None) -> Progress:
    """Return the callback a handler reports progress through; it raises JobInterrupted."""
    last_write = float("-inf")

    def report(percent: int) -> None:
        nonlocal last_write
        if lease is not None and lease.lost.is_set():
            raise JobInterrupted()
        if monotonic() - last_write < PROGRESS_WRITE_INTERVAL_SECONDS:
            return
        last_write = monotonic()
        if not transition(held_by(job), progress=max(0, min(100, int(percent)))):
            raise JobInterrupted()

    return report


def job_complete(*, job: Job, output: dict[str, Any], duration_ms: int) -> bool:
    """Store the result and mark the job completed, if this claim still holds it."""
    now = timezone.now()
    with transaction.atomic():
        completed = transition(
            held_by(job),
            status=Job.Status.COMPLETED,
            progress=100,
            completed_at=now,
            lease_expires_at=None,
            error_message="",
        )
        if completed:
            JobResult.objects.create(
                job_id=job.pk, output=output, completed_at=now, duration_ms=duration_ms
            )
            finish_attempt(job, outcome=JobAttempt.Outcome.SUCCEEDED, now=now)
    if completed:
        metrics.job_completed(job)
    else:
        _record_interruption(job)
    return bool(completed)


def job_fail_attempt(*, job: Job, exc: Exception, trace: str) -> None:
    """Record a failed attempt: retry after a backoff while retries remain, else fail."""
    message = _user_message(exc)
    timed_out = isinstance(exc, JobTimedOut)
    outcome = JobAttempt.Outcome.TIMED_OUT if timed_out else JobAttempt.Outcome.FAILED
    now = timezone.now()
    final = isinstance(exc, PermanentJobError) or job.attempts > job.max_retries
    if final:
        changes = {"status": Job.Status.FAILED, "completed_at": now, "error_message": message}
    else:
        changes = {
            "status": Job.Status.PENDING,
            "run_after": now + _backoff(job),
            "enqueued_at": None,  # Beat's dispatcher publishes it when the backoff is over.
            "claim_token": None,
            "error_message": f"Attempt {job.attempts} failed: {message} Retrying.",
        }
    with transaction.atomic():
        recorded = transition(held_by(job), lease_expires_at=None, error_traceback=trace, **changes)
        if recorded:
            finish_attempt(job, outcome=outcome, error_message=message, now=now)
    if recorded and final:
        metrics.job_failed(job)


def _backoff(job: Job):
    try:
        base = handlers.get(job.job_type).retry_backoff_seconds
    except KeyError:
        base = None
    return retry_delay(attempt=job.attempts, base_seconds=base)


def _record_interruption(job: Job) -> None:
    cancelled = Job.objects.filter(pk=job.pk, status=Job.Status.CANCELLED).exists()
    outcome = JobAttempt.Outcome.CANCELLED if cancelled else JobAttempt.Outcome.SUPERSEDED
    finish_attempt(job, outcome=outcome)


def _user_message(exc: Exception) -> str:
    # Handler errors are written for users; anything else is a bug whose details stay in the
    # traceback, which only staff see.
    if isinstance(exc, PermanentJobError | RetryableJobError):
        return str(exc)[:MAX_ERROR_MESSAGE_LENGTH] or type(exc).__name__
    return f"The job crashed with an internal error ({type(exc).__name__})."
