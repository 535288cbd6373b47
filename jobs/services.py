"""Every change to a job's state happens here.

A state change is a conditional UPDATE whose row count says whether it happened, so web
processes, workers and Beat can race freely: a job is claimed once, finishes once and has at
most one result. Broker messages only carry job ids and are hints; the database is the truth.
"""

import json
import logging
import random
import traceback
import uuid
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from jobs import handlers, queue
from jobs.handlers.base import JobInterrupted, PermanentJobError, Progress, RetryableJobError
from jobs.models import Job, JobResult

logger = logging.getLogger(__name__)

# How often a running job may write progress; each write also renews the lease and notices a
# cancellation, so this bounds how long a cancelled handler keeps running.
PROGRESS_WRITE_INTERVAL_SECONDS = 0.5
DISPATCH_BATCH_SIZE = 500
MAX_ERROR_MESSAGE_LENGTH = 2000


class JobStateError(Exception):
    """The job is not in a state that allows the requested change."""

    def __init__(self, message: str, *, job: Job) -> None:
        super().__init__(message)
        self.job = job


def _transition(jobs: QuerySet[Job], **changes: Any) -> int:
    # QuerySet.update() skips auto_now, so every transition stamps updated_at itself.
    return jobs.update(updated_at=timezone.now(), **changes)


def job_create(
    *,
    owner,
    name: str,
    job_type: str = handlers.DEFAULT_JOB_TYPE,
    parameters: dict[str, Any],
    description: str = "",
    scheduled_time: datetime | None = None,
    max_retries: int | None = None,
) -> Job:
    """Store a new pending job and, when it is due now, publish it once the row is committed."""
    handler = handlers.get(job_type)
    now = timezone.now()
    due_now = scheduled_time is None or scheduled_time <= now
    job = Job(
        owner=owner,
        name=name,
        description=description,
        job_type=job_type,
        parameters=parameters,
        scheduled_time=scheduled_time,
        max_retries=handler.max_retries if max_retries is None else max_retries,
        created_at=now,
        run_after=now if due_now else scheduled_time,
        # A scheduled job waits for Beat's dispatcher; it never sits in the broker as an ETA.
        enqueued_at=now if due_now else None,
    )
    with transaction.atomic():
        job.save(force_insert=True)
        if due_now:
            queue.publish_on_commit([(job.pk, job.job_type)])
    logger.info("job created", extra={"job_id": str(job.pk), "job_type": job_type})
    return job


def job_cancel(*, job: Job) -> Job:
    """Cancel a pending or running job; a running handler notices at its next progress report."""
    cancelled = _transition(
        Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE_STATUSES),
        status=Job.Status.CANCELLED,
        completed_at=timezone.now(),
        lease_expires_at=None,
    )
    job.refresh_from_db()
    if not cancelled:
        raise JobStateError(f"The job is already {job.status} and cannot be cancelled.", job=job)
    return job


def job_retry(*, job: Job) -> Job:
    """Put a failed or cancelled job back in the queue, with a fresh count of attempts."""
    now = timezone.now()
    run_after = max(job.scheduled_time or now, now)
    due_now = run_after <= now
    with transaction.atomic():
        requeued = _transition(
            Job.objects.filter(pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED]),
            status=Job.Status.PENDING,
            attempts=0,
            progress=0,
            error_message="",
            error_traceback="",
            started_at=None,
            completed_at=None,
            run_after=run_after,
            enqueued_at=now if due_now else None,
            claim_token=None,
            lease_expires_at=None,
            worker="",
        )
        if requeued and due_now:
            queue.publish_on_commit([(job.pk, job.job_type)])
    job.refresh_from_db()
    if not requeued:
        raise JobStateError(
            f"Only failed or cancelled jobs can be retried; this one is {job.status}.", job=job
        )
    return job


def job_claim(*, job_id: uuid.UUID, worker: str) -> Job | None:
    """Mark a due pending job as in progress; return None if it is not ours to run."""
    now = timezone.now()
    token = uuid.uuid4()
    claimed = _transition(
        Job.objects.filter(pk=job_id, status=Job.Status.PENDING, run_after__lte=now),
        status=Job.Status.IN_PROGRESS,
        claim_token=token,
        lease_expires_at=now + settings.JOB_LEASE,
        started_at=now,
        attempts=F("attempts") + 1,
        progress=0,
        worker=worker[:255],
    )
    if not claimed:
        return None
    return Job.objects.get(pk=job_id)


def job_run(*, job_id: uuid.UUID, worker: str) -> None:
    """Claim a job, run its handler and record the outcome. A duplicate message does nothing."""
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        logger.info("job not claimed (already taken, not due or finished)", extra=_log(job_id))
        return
    log = _log(job.pk, job)
    try:
        handler = handlers.get(job.job_type)
    except KeyError:
        job_fail_attempt(
            job=job, exc=PermanentJobError(f"Unknown job type {job.job_type!r}."), trace=""
        )
        return
    started = monotonic()
    try:
        output = handler.run(job.parameters, job_progress_reporter(job=job))
        json.dumps(output)  # A result must be JSON; find out here, not half-way into a write.
    except JobInterrupted:
        logger.info("job interrupted: cancelled or taken over", extra=log)
    except Exception as exc:
        logger.warning("job attempt failed: %s", exc, extra=log)
        job_fail_attempt(job=job, exc=exc, trace=traceback.format_exc())
    else:
        duration_ms = int((monotonic() - started) * 1000)
        if job_complete(job=job, output=output, duration_ms=duration_ms):
            logger.info("job completed in %d ms", duration_ms, extra=log)
        else:
            logger.info("job finished but was cancelled or taken over; result dropped", extra=log)


def _owned_by_claim(job: Job) -> QuerySet[Job]:
    """The job, only while this claim still holds it."""
    return Job.objects.filter(pk=job.pk, status=Job.Status.IN_PROGRESS, claim_token=job.claim_token)


def job_progress_reporter(*, job: Job) -> Progress:
    """Return the callback a handler reports progress through; it raises JobInterrupted."""
    last_write = float("-inf")

    def report(percent: int) -> None:
        nonlocal last_write
        if monotonic() - last_write < PROGRESS_WRITE_INTERVAL_SECONDS:
            return
        last_write = monotonic()
        still_ours = _transition(
            _owned_by_claim(job),
            progress=max(0, min(100, int(percent))),
            lease_expires_at=timezone.now() + settings.JOB_LEASE,
        )
        if not still_ours:
            raise JobInterrupted()

    return report


def job_complete(*, job: Job, output: dict[str, Any], duration_ms: int) -> bool:
    """Store the result and mark the job completed, if this claim still holds it."""
    now = timezone.now()
    with transaction.atomic():
        completed = _transition(
            _owned_by_claim(job),
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
    return bool(completed)


def job_fail_attempt(*, job: Job, exc: Exception, trace: str) -> None:
    """Record a failed attempt: retry after a backoff while retries remain, else fail."""
    permanent = isinstance(exc, PermanentJobError)
    message = _user_message(exc)
    if permanent or job.attempts > job.max_retries:
        _transition(
            _owned_by_claim(job),
            status=Job.Status.FAILED,
            completed_at=timezone.now(),
            lease_expires_at=None,
            error_message=message,
            error_traceback=trace,
        )
        return
    retry_at = timezone.now() + retry_delay(attempt=job.attempts)
    _transition(
        _owned_by_claim(job),
        status=Job.Status.PENDING,
        run_after=retry_at,
        enqueued_at=None,  # Beat's dispatcher publishes it when the backoff is over.
        claim_token=None,
        lease_expires_at=None,
        error_message=f"Attempt {job.attempts} failed: {message} Retrying.",
        error_traceback=trace,
    )


def _user_message(exc: Exception) -> str:
    # Handler errors are written for users; anything else is a bug whose details stay in the
    # traceback, which only staff see.
    if isinstance(exc, PermanentJobError | RetryableJobError):
        return str(exc)[:MAX_ERROR_MESSAGE_LENGTH] or type(exc).__name__
    return f"The job crashed with an internal error ({type(exc).__name__})."


def retry_delay(*, attempt: int) -> timedelta:
    """Exponential backoff with jitter: about base * 2^(attempt-1), capped."""
    ceiling = min(
        settings.JOB_RETRY_BACKOFF_MAX_SECONDS,
        settings.JOB_RETRY_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1),
    )
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 (not crypto)


def jobs_dispatch_due(*, limit: int = DISPATCH_BATCH_SIZE) -> int:
    """Publish pending jobs whose time has come and that have no message yet."""
    now = timezone.now()
    due = Job.objects.filter(status=Job.Status.PENDING, enqueued_at=None, run_after__lte=now)
    return _mark_enqueued_and_publish(due, now=now, limit=limit)


def jobs_reap_stale(*, limit: int = DISPATCH_BATCH_SIZE) -> dict[str, int]:
    """Recover jobs whose message or worker was lost."""
    now = timezone.now()
    lost_messages = Job.objects.filter(
        status=Job.Status.PENDING,
        run_after__lte=now,
        enqueued_at__lt=now - settings.JOB_REDISPATCH_AFTER,
    )
    republished = _mark_enqueued_and_publish(lost_messages, now=now, limit=limit)
    requeued = failed = 0
    expired = Job.objects.filter(status=Job.Status.IN_PROGRESS, lease_expires_at__lt=now)
    for job in expired.order_by("lease_expires_at")[:limit]:
        if _recover_lost_worker(job, now=now):
            requeued += 1
        else:
            failed += 1
    if republished or requeued or failed:
        logger.warning(
            "reaper: republished %d, requeued %d, failed %d", republished, requeued, failed
        )
    return {"republished": republished, "requeued": requeued, "failed": failed}


def _recover_lost_worker(job: Job, *, now: datetime) -> bool:
    """Requeue a job whose worker stopped renewing its lease; True if it will run again."""
    lease_lapsed = Job.objects.filter(
        pk=job.pk, status=Job.Status.IN_PROGRESS, claim_token=job.claim_token
    )
    if job.attempts > job.max_retries:
        _transition(
            lease_lapsed,
            status=Job.Status.FAILED,
            completed_at=now,
            lease_expires_at=None,
            error_message=f"The worker running this job was lost ({job.attempts} attempts).",
        )
        return False
    _transition(
        lease_lapsed,
        status=Job.Status.PENDING,
        run_after=now + retry_delay(attempt=job.attempts),
        enqueued_at=None,
        claim_token=None,
        lease_expires_at=None,
        error_message=f"The worker running attempt {job.attempts} was lost. Retrying.",
    )
    return True


def _mark_enqueued_and_publish(jobs: QuerySet[Job], *, now: datetime, limit: int) -> int:
    # Each caller stamps the rows it takes with its own token and publishes only those, so
    # two dispatchers (or a dispatcher and the reaper) never publish the same job together.
    candidates = list(jobs.order_by("run_after").values_list("pk", flat=True)[:limit])
    if not candidates:
        return 0
    token = uuid.uuid4()
    with transaction.atomic():
        _transition(
            jobs.filter(pk__in=candidates),
            enqueued_at=now,
            dispatch_token=token,
        )
        taken = list(
            Job.objects.filter(pk__in=candidates, dispatch_token=token).values_list(
                "pk", "job_type"
            )
        )
        queue.publish_on_commit(taken)
    return len(taken)


def _log(job_id: uuid.UUID, job: Job | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"job_id": str(job_id)}
    if job is not None:
        fields.update(job_type=job.job_type, attempt=job.attempts)
    return fields
