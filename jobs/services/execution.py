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
from functools import partial
from time import monotonic
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
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
from jobs.models import Job, JobAttempt
from jobs.services import transitions
from jobs.services.common import log_fields, retry_delay, timeout_is_final
from jobs.services.leases import LeaseKeeper, Stop
from jobs.services.recovery import job_release_if_early
from jobs.services.transitions import MAX_ERROR_MESSAGE_LENGTH

logger = logging.getLogger(__name__)

# How often a running job may write progress: each write tells the owner a job.progress event,
# at most one a second, and also confirms the claim, saving the watchdog a check.
PROGRESS_WRITE_INTERVAL_SECONDS = 1.0


class JobTimedOut(RetryableJobError):
    """The attempt ran past the job's time limit."""


def job_claim(*, job_id: uuid.UUID, worker: str) -> Job | None:
    """Mark a due, admitted job as in progress; return None if it is not ours to run.

    Only an admitted job (one given a message: enqueued_at) may be claimed: admission
    decided it breaks no limit. A stale message for a job released since claims nothing.
    """
    now = timezone.now()
    # One statement, so no transaction: the attempt's row is written when it ends.
    job = transitions.apply_returning(
        transitions.CLAIM,
        job_id,
        now=now,
        started_at=now,
        claim_token=uuid.uuid4(),
        lease_expires_at=now + settings.JOB_LEASE,
        worker=worker[:255],
    )
    if job is not None:
        metrics.job_claimed(job)
    return job


def jobs_run_in_turn(*, job_ids: list[uuid.UUID], worker: str) -> None:
    """Run the jobs of one message one after another, each within its own time limit.

    Each job is claimed when its turn comes, so the others stay pending until then: a client
    can still cancel them, and a worker lost mid-message holds one claim, not all of them.
    When a job is taken from this worker while it runs (handed back by a worker told to
    stop, or reaped after a lapsed lease), the rest are released to the dispatcher, which
    spreads them over the workers within a second, instead of keeping this one busy.
    """
    for position, job_id in enumerate(job_ids):
        behind = job_ids[position + 1 :]
        if not job_run(job_id=job_id, worker=worker, behind=behind):
            queue.release(behind)
            return


@job_log_scope
def job_run(*, job_id: uuid.UUID, worker: str, behind: Sequence[uuid.UUID] = ()) -> bool:
    """Claim a job, run its handler and record the outcome. A duplicate message does nothing.

    The watchdog (services.leases) stops the handler at the job's time limit or when the job
    is cancelled. `behind` are the jobs after this one in the same message: if the handler will
    not stop and the process must end, they are released to the dispatcher first. Return False if
    the job was taken from this worker while it ran.
    """
    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        if job_release_if_early(job_id=job_id):
            logger.warning(
                "job arrived before its time; released to the dispatcher", extra=log_fields(job_id)
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
    """Run the handler and record the attempt; False if the job was taken from it meanwhile."""
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
        logger.info("job interrupted: cancelled, handed back or reaped", extra=log)
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
            logger.info(
                "job finished but was cancelled, handed back or reaped; result dropped", extra=log
            )
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
            written = transitions.apply(
                transitions.PROGRESS, job, progress=max(0, min(100, int(percent)))
            )
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

    The worker running a shared message needs to know which, to go on or release the rest.
    """
    now = timezone.now()
    # With the result and the attempt's record: on PostgreSQL one statement, one round trip
    # instead of five, and about a third less of a worker's time per quick job.
    completed = transitions.apply(
        transitions.COMPLETE,
        job,
        now=now,
        completed_at=now,
        record={"output": output, "output_bytes": output_bytes, "duration_ms": duration_ms},
    )
    if not completed:
        return _record_interruption(job)
    metrics.job_completed(job)
    return JobAttempt.Outcome.SUCCEEDED


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
    record = {"outcome": outcome, "error_message": message}
    if final:
        recorded = transitions.apply(
            transitions.FAIL,
            job,
            now=now,
            record=record,
            completed_at=now,
            error_message=message,
            error_traceback=trace,
        )
    else:
        # Beat's dispatcher publishes it when the backoff is over.
        recorded = transitions.apply(
            transitions.RETRY_LATER,
            job,
            now=now,
            record=record,
            run_after=now + _backoff(job),
            error_message=f"Attempt {job.attempts} failed: {message} Retrying.",
            error_traceback=trace,
        )
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
    records the attempt first wins. The jobs behind it in the same message are released to the
    dispatcher, as this process will not run them.
    """
    if stop is SoftTimeLimitExceeded:
        handler_frame = sys._current_frames().get(threading.main_thread().ident)
        where = "".join(traceback.format_stack(handler_frame)) if handler_frame else ""
        trace = f"The handler did not stop at its time limit; its process was ended here:\n{where}"
        job_fail_attempt(job=job, exc=_timed_out(job), trace=trace)
    else:
        _record_interruption(job)
    queue.release(list(behind))


def _record_interruption(job: Job) -> str:
    """Close the attempt as cancelled or superseded; return which."""
    cancelled = Job.objects.filter(pk=job.pk, status=Job.Status.CANCELLED).exists()
    outcome = JobAttempt.Outcome.CANCELLED if cancelled else JobAttempt.Outcome.SUPERSEDED
    transitions.record_attempt(job, outcome=outcome)
    return outcome


def _user_message(exc: Exception) -> str:
    # Handler errors are written for users; anything else is a bug whose details stay in the
    # traceback, which only staff see.
    if isinstance(exc, PermanentJobError | RetryableJobError):
        return str(exc)[:MAX_ERROR_MESSAGE_LENGTH] or type(exc).__name__
    return f"The job crashed with an internal error ({type(exc).__name__})."
