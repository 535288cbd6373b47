"""What a worker does with a job: claim it, keep its lease, run its handler, record the outcome.

Every write after the claim is fenced by the claim token, so a worker whose lease was taken
over (or whose job was cancelled) writes nothing: no progress, no result, no failure.
"""

import json
import logging
import sys
import threading
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from time import monotonic
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from job_system.logging import bind_job, job_log_scope
from jobs import handlers, metrics, queue
from jobs.handlers.base import (
    JobHandler,
    JobInterrupted,
    PermanentJobError,
    Progress,
    RetryableJobError,
)
from jobs.models import Job, JobAttempt, JobResult
from jobs.services.common import (
    JOB_COLUMNS,
    MAX_ERROR_MESSAGE_LENGTH,
    finish_attempt,
    held_by,
    job_from_returning,
    log_fields,
    retry_delay,
    timeout_is_final,
    transition,
    update_returning,
)
from jobs.services.leases import LeaseKeeper, Stop
from jobs.services.recovery import job_hand_back_if_early

logger = logging.getLogger(__name__)

# How often a running job may write progress. Each write also confirms the claim, saving the
# watchdog a check.
PROGRESS_WRITE_INTERVAL_SECONDS = 0.5


class JobTimedOut(RetryableJobError):
    """The attempt ran past the job's time limit."""


def job_claim(*, job_id: uuid.UUID, worker: str) -> Job | None:
    """Mark a due, admitted job as in progress; return None if it is not ours to run.

    Only an admitted job (one given a message: enqueued_at) may be claimed: admission
    decided it breaks no limit. A stale message for a job released since claims nothing.
    """
    now = timezone.now()
    claim = {
        "claim_token": uuid.uuid4(),
        "lease_expires_at": now + settings.JOB_LEASE,
        "worker": worker[:255],
    }
    # One statement, so no transaction: the attempt's row is written when it ends.
    if connection.vendor == "postgresql":
        job = job_from_returning(_CLAIM_SQL, {"job_id": job_id, "now": now, **claim})
    else:
        job = update_returning(
            job_id,
            Job.objects.filter(
                status=Job.Status.PENDING, run_after__lte=now, enqueued_at__isnull=False
            ),
            status=Job.Status.IN_PROGRESS,
            started_at=now,
            attempts=F("attempts") + 1,
            run_attempts=F("run_attempts") + 1,
            progress=0,
            **claim,
        )
    if job is not None:
        metrics.job_claimed(job)
    return job


# The claim's UPDATE as update_returning() builds it, written out for PostgreSQL: building it
# through the ORM took 0.7 ms, an eighth of a worker's time on a quick job.
_CLAIM_SQL = f"""
UPDATE jobs_job
SET status = 'in_progress', claim_token = %(claim_token)s, lease_expires_at = %(lease_expires_at)s,
    started_at = %(now)s, attempts = attempts + 1, run_attempts = run_attempts + 1, progress = 0,
    worker = %(worker)s, updated_at = %(now)s
WHERE id = %(job_id)s AND status = 'pending' AND run_after <= %(now)s AND enqueued_at IS NOT NULL
RETURNING {JOB_COLUMNS}
"""  # noqa: S608 - the columns are the model's own


def jobs_run_in_turn(*, job_ids: list[uuid.UUID], worker: str) -> None:
    """Run the jobs of one message one after another, each within its own time limit.

    Each job is claimed when its turn comes, so the others stay pending until then: a client
    can still cancel them, and a worker lost mid-message holds one claim, not all of them.
    When a job is taken from this worker while it runs (handed back by a worker told to
    stop, or taken over after a lapsed lease), the rest go back to the dispatcher, which
    spreads them over the workers within a second, instead of keeping this one busy.
    """
    for position, job_id in enumerate(job_ids):
        behind = job_ids[position + 1 :]
        if not job_run(job_id=job_id, worker=worker, behind=behind):
            queue.forget_enqueued(behind)
            return


@job_log_scope
def job_run(*, job_id: uuid.UUID, worker: str, behind: Sequence[uuid.UUID] = ()) -> bool:
    """Claim a job, run its handler and record the outcome. A duplicate message does nothing.

    The watchdog (services.leases) stops the handler at the job's time limit or when the job
    is cancelled. `behind` are the jobs after this one in the same message: if the handler will
    not stop and the process must end, they go back to the dispatcher first. Return False if
    the job was taken from this worker while it ran.
    """
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        if job_hand_back_if_early(job_id=job_id):
            logger.warning(
                "job arrived before its time; back to the dispatcher", extra=log_fields(job_id)
            )
        else:
            logger.info("job not claimed (taken or finished)", extra=log_fields(job_id))
        return True
    bind_job(job)
    try:
        handler = handlers.get(job.job_type)
    except KeyError:
        unknown = PermanentJobError(f"Unknown job type {job.job_type!r}.")
        job_fail_attempt(job=job, exc=unknown, trace="")
        return True
    with LeaseKeeper(job, abandon=partial(_abandon, job, behind)) as lease:
        return _run_handler(job, handler, lease)


def _run_handler(job: Job, handler: JobHandler, lease: LeaseKeeper) -> bool:
    """Run the handler and record the attempt; False if the job was taken over meanwhile."""
    log = log_fields(job.pk, job)
    logger.info("job started", extra=log)
    started = monotonic()
    try:
        with lease.handler_running():
            output = handler.run(job.parameters, job_progress_reporter(job=job, lease=lease))
            # Measured here, which also finds output that is not JSON before any write.
            output_bytes = result_size(output)
            if output_bytes > settings.JOB_MAX_RESULT_BYTES:
                raise PermanentJobError(
                    f"The result is too large: {output_bytes:,} bytes of JSON, over the limit "
                    f"of {settings.JOB_MAX_RESULT_BYTES:,} bytes."
                )
    except JobInterrupted:
        logger.info("job interrupted: cancelled or taken over", extra=log)
        return _record_interruption(job) != JobAttempt.Outcome.SUPERSEDED
    except SoftTimeLimitExceeded:
        logger.warning("job ran past its %ss time limit", job.timeout_seconds, extra=log)
        job_fail_attempt(job=job, exc=_timed_out(job), trace=traceback.format_exc())
    except Exception as exc:
        logger.warning("job attempt failed: %s", exc, extra=log)
        job_fail_attempt(job=job, exc=exc, trace=traceback.format_exc())
    else:
        duration_ms = int((monotonic() - started) * 1000)
        outcome = _complete(job, output, output_bytes=output_bytes, duration_ms=duration_ms)
        if outcome == JobAttempt.Outcome.SUCCEEDED:
            logger.info("job completed in %d ms", duration_ms, extra=log)
        else:
            logger.info("job finished but was cancelled or taken over; result dropped", extra=log)
            return outcome != JobAttempt.Outcome.SUPERSEDED
    finally:
        metrics.job_attempt_ran(job, seconds=monotonic() - started)
    return True


def job_progress_reporter(*, job: Job, lease: LeaseKeeper) -> Progress:
    """Return the callback a handler reports progress through.

    It raises JobInterrupted when the job is no longer this claim's, and SoftTimeLimitExceeded
    past the attempt's deadline (the watchdog's verdicts, for a handler it cannot signal).
    """
    last_write = float("-inf")

    def report(percent: int) -> None:
        nonlocal last_write
        lease.raise_if_stopped()
        if monotonic() - last_write < PROGRESS_WRITE_INTERVAL_SECONDS:
            return
        last_write = monotonic()
        with lease.shielded():
            written = transition(held_by(job), progress=max(0, min(100, int(percent))))
        if not written:
            raise JobInterrupted()
        lease.confirmed()

    return report


def result_size(output: dict[str, Any]) -> int:
    """The output's size in bytes as compact UTF-8 JSON, as the API sends it."""
    return len(json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode())


def job_complete(*, job: Job, output: dict[str, Any], duration_ms: int) -> bool:
    """Store the result and mark the job completed, if this claim still holds it."""
    outcome = _complete(job, output, output_bytes=result_size(output), duration_ms=duration_ms)
    return outcome == JobAttempt.Outcome.SUCCEEDED


def _complete(job: Job, output: dict[str, Any], *, output_bytes: int, duration_ms: int) -> str:
    """job_complete(), returning the attempt's outcome: succeeded, else cancelled or superseded.

    The worker running a shared message needs to know which, to go on or hand the rest back.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        completed = _complete_in_one_statement(
            job, output, output_bytes=output_bytes, duration_ms=duration_ms, now=now
        )
    else:
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
                    job_id=job.pk,
                    output=output,
                    output_bytes=output_bytes,
                    completed_at=now,
                    duration_ms=duration_ms,
                )
                finish_attempt(job, outcome=JobAttempt.Outcome.SUCCEEDED, now=now)
    if not completed:
        return _record_interruption(job)
    metrics.job_completed(job)
    return JobAttempt.Outcome.SUCCEEDED


# On PostgreSQL, the fenced UPDATE and the inserts of the result and the attempt as one
# statement, atomic without BEGIN and COMMIT: one round trip instead of five, and about a third
# less of a worker's time per quick job. The same writes as the transaction in job_complete(),
# which SQLite runs (it has no data-modifying WITH).
_COMPLETE_SQL = """
WITH completed AS (
    UPDATE jobs_job
    SET status = 'completed', progress = 100, completed_at = %(now)s, lease_expires_at = NULL,
        error_message = '', updated_at = %(now)s
    WHERE id = %(job_id)s AND status = 'in_progress' AND claim_token = %(claim_token)s
    RETURNING id
), result AS (
    INSERT INTO jobs_jobresult (job_id, output, output_bytes, completed_at, duration_ms)
    SELECT id, %(output)s, %(output_bytes)s, %(now)s, %(duration_ms)s FROM completed
), attempt AS (
    INSERT INTO jobs_jobattempt
        (job_id, number, run, claim_token, worker, started_at, finished_at, outcome, error_message)
    SELECT id, %(number)s, %(run)s, %(claim_token)s, %(worker)s, %(started_at)s, %(now)s,
        'succeeded', ''
    FROM completed
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM completed
"""


def _complete_in_one_statement(
    job: Job, output: dict[str, Any], *, output_bytes: int, duration_ms: int, now: datetime
) -> int:
    output_field = JobResult._meta.get_field("output")
    params = {
        "now": now,
        "job_id": job.pk,
        "claim_token": job.claim_token,
        "output": output_field.get_db_prep_value(output, connection),
        "output_bytes": output_bytes,
        "duration_ms": duration_ms,
        "number": job.attempts,
        "run": job.run,
        "worker": job.worker,
        "started_at": job.started_at,
    }
    with connection.cursor() as cursor:
        cursor.execute(_COMPLETE_SQL, params)
        return cursor.fetchone()[0]


def job_fail_attempt(*, job: Job, exc: Exception, trace: str) -> None:
    """Record a failed attempt: retry after a backoff while retries remain, else fail."""
    message = _user_message(exc)
    timed_out = isinstance(exc, JobTimedOut)
    outcome = JobAttempt.Outcome.TIMED_OUT if timed_out else JobAttempt.Outcome.FAILED
    now = timezone.now()
    final = (
        isinstance(exc, PermanentJobError)
        or job.run_attempts > job.max_retries
        or (timed_out and timeout_is_final(job))
    )
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
    handler = handlers.find(job.job_type)
    base = handler.retry_backoff_seconds if handler else None
    return retry_delay(attempt=job.run_attempts, base_seconds=base)


def _timed_out(job: Job) -> JobTimedOut:
    return JobTimedOut(f"The job ran past its {job.timeout_seconds}s time limit.")


def _abandon(job: Job, behind: Sequence[uuid.UUID], stop: Stop) -> None:
    """Record the end of an attempt whose handler would not stop, before its process ends.

    The watchdog thread runs this. Its writes are fenced like the worker's own, so whichever
    records the attempt first wins. The jobs behind it in the same message go back to the
    dispatcher, as this process will not run them.
    """
    if stop is SoftTimeLimitExceeded:
        handler_frame = sys._current_frames().get(threading.main_thread().ident)
        where = "".join(traceback.format_stack(handler_frame)) if handler_frame else ""
        trace = f"The handler did not stop at its time limit; its process was ended here:\n{where}"
        job_fail_attempt(job=job, exc=_timed_out(job), trace=trace)
    else:
        _record_interruption(job)
    queue.forget_enqueued(list(behind))


def _record_interruption(job: Job) -> str:
    """Close the attempt as cancelled or superseded; return which."""
    cancelled = Job.objects.filter(pk=job.pk, status=Job.Status.CANCELLED).exists()
    outcome = JobAttempt.Outcome.CANCELLED if cancelled else JobAttempt.Outcome.SUPERSEDED
    finish_attempt(job, outcome=outcome)
    return outcome


def _user_message(exc: Exception) -> str:
    # Handler errors are written for users; anything else is a bug whose details stay in the
    # traceback, which only staff see.
    if isinstance(exc, PermanentJobError | RetryableJobError):
        return str(exc)[:MAX_ERROR_MESSAGE_LENGTH] or type(exc).__name__
    return f"The job crashed with an internal error ({type(exc).__name__})."
