"""What Beat and shutting-down workers do: admit and publish due jobs, reap and hand back.

Each runs safely beside copies of itself: rows are taken by conditional updates, so two
dispatchers or two reapers never publish or requeue the same job twice.
"""

import logging
import time
import uuid
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from jobs import metrics
from jobs.models import Job, JobAttempt
from jobs.services import transitions
from jobs.services.admission import jobs_admit, mark_enqueued_and_publish
from jobs.services.common import attempt_deadline, retry_delay, timeout_is_final

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


def jobs_dispatch_due() -> int:
    """Admit waiting jobs in fair order, and those due within the look-ahead; count them.

    The safety net under the admissions that requests and workers run: jobs whose backoff
    or scheduled time came, jobs handed back, jobs whose admission found a broker down. A
    job not yet due goes out with an ETA, so the worker starts it on time rather than up to
    a dispatch interval late. Logged only when something was admitted: this runs every second.
    """
    admitted = jobs_admit(ahead=True)
    if admitted:
        logger.info("dispatcher admitted %d job(s)", admitted)
    return admitted


def job_release_if_early(*, job_id: uuid.UUID) -> bool:
    """Release a pending job whose message came before its time to the dispatcher.

    The claim refuses a job before its run_after, which happens when the clocks of the hosts
    disagree. Still marked as published, the job would wait minutes for the reaper; released,
    the dispatcher publishes it again at its time. Return whether the job was released.
    """
    early = Job.objects.filter(pk=job_id, run_after__gt=timezone.now(), enqueued_at__isnull=False)
    return bool(transitions.apply_all(transitions.RELEASE, early))


def jobs_reap_stale(*, limit: int = BATCH_SIZE) -> dict[str, int]:
    """Recover jobs whose message or worker was lost."""
    counts = _recover_stuck(Job.objects.all(), limit=limit)
    if any(counts.values()):
        logger.warning("reaper: %s", counts)
    return counts


def jobs_requeue_stuck(*, jobs: QuerySet[Job]) -> dict[str, int]:
    """Recover the stuck jobs among `jobs` now, as the reaper would; the others stay as they are.

    For staff who will not wait for the reaper's next round (the admin's bulk action).
    """
    counts = _recover_stuck(jobs, limit=None)
    logger.info("stuck jobs recovered on request: %s", counts)
    return counts


def _recover_stuck(jobs: QuerySet[Job], *, limit: int | None) -> dict[str, int]:
    """Republish lost messages and reap lapsed leases among `jobs`; count what was done."""
    now = timezone.now()
    lost_messages = jobs.filter(
        status=Job.Status.PENDING,
        run_after__lte=now,
        enqueued_at__lt=now - settings.JOB_REDISPATCH_AFTER,
        claim_token=None,  # Always, for a pending job; it makes job_admitted's rows the scan.
    )
    counts = {
        "republished": mark_enqueued_and_publish(lost_messages, now=now, limit=limit),
        "requeued": 0,
        "failed": 0,
    }
    expired = jobs.filter(status=Job.Status.IN_PROGRESS, lease_expires_at__lt=now)
    for job in expired.order_by("lease_expires_at")[:limit]:
        outcome = _reap(job, now=now)
        if outcome:
            counts[outcome] += 1
    return counts


def _reap(job: Job, *, now: datetime) -> str | None:
    """Requeue or fail a job whose lease ran out; return which, or None if it was not ours."""
    timed_out = attempt_deadline(job) <= now
    if timed_out:
        reason = f"The job ran past its {job.timeout_seconds}s time limit."
        outcome = JobAttempt.Outcome.TIMED_OUT
    else:
        reason = f"The worker running attempt {job.attempts} was lost."
        outcome = JobAttempt.Outcome.LOST
    if job.run_attempts > job.max_retries or (timed_out and timeout_is_final(job)):
        changes = {"status": Job.Status.FAILED, "completed_at": now, "error_message": reason}
    else:
        changes = {
            "status": Job.Status.PENDING,
            "run_after": now + retry_delay(attempt=job.run_attempts),
            "enqueued_at": None,
            "claim_token": None,
            "error_message": f"{reason} Retrying.",
        }
    record = {"outcome": outcome, "error_message": reason}
    # Fenced by the claim whose lease lapsed.
    if not transitions.apply(transitions.REAP, job, now=timezone.now(), record=record, **changes):
        return None  # The worker renewed it, or another reaper got there first.
    if changes["status"] == Job.Status.FAILED:
        metrics.job_failed(job)
        return "failed"
    return "requeued"


def jobs_hand_back(*, worker: str, grace_seconds: float) -> int:
    """Hand back the jobs a shutting-down worker still runs after a grace period.

    They go back to pending without counting the attempt against max_retries (it keeps its
    number in the job's history), and Beat's dispatcher publishes them within a second; the
    watchdogs of the processes still running them (services.leases) see within a second that
    the jobs are no longer theirs, and stop their handlers.
    """
    running = Job.objects.filter(status=Job.Status.IN_PROGRESS, worker=worker)
    deadline = time.monotonic() + grace_seconds
    while running.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    handed_back = 0
    for job in running.only("claim_token"):
        handed_back += _hand_back(job)
    if handed_back:
        logger.warning("worker %s handed back %d running job(s)", worker, handed_back)
    return handed_back


def _hand_back(job: Job) -> int:
    now = timezone.now()
    return transitions.apply(
        transitions.HAND_BACK,
        job,
        now=now,
        run_after=now,
        error_message="Handed back by a worker that was shutting down; it will run again.",
    )
