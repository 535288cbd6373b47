"""What Beat and shutting-down workers do: admit and publish due jobs, reap and hand back.

Each runs safely beside copies of itself: rows are taken by conditional updates, so two
dispatchers or two reapers never publish or requeue the same job twice.

An admitted job's message can be lost between the commit and the broker (a web process killed
while its publisher held it, a worker killed after admitting), with the broker (Redis restarted
empty), or with a worker that took it (killed or frozen). The database cannot tell a lost
message from one that waits its turn in a queue, so the reaper asks the broker: an admitted
job admitted over JOB_MESSAGE_GRACE_SECONDS ago is published again when no message for it
waits in a queue and none taken by a worker shows signs of life. A message wrongly thought
lost costs a duplicate, which the claim makes a no-op; never a second run.
"""

import logging
import time
import uuid
from datetime import datetime

import redis
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from jobs import metrics, queue
from jobs.models import Job, JobAttempt
from jobs.services import transitions
from jobs.services.admission import jobs_admit, mark_enqueued_and_publish, queue_names
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
    # The last resort, should the broker's messages ever mislead the audit below.
    long_published = jobs.filter(
        status=Job.Status.PENDING,
        run_after__lte=now,
        enqueued_at__lt=now - settings.JOB_REDISPATCH_AFTER,
        claim_token=None,  # Always, for a pending job; it makes job_admitted's rows the scan.
    )
    counts = {
        "republished": mark_enqueued_and_publish(long_published, now=now, limit=limit),
        "requeued": 0,
        "failed": 0,
    }
    counts["republished"] += _republish_lost_messages(jobs, now=now, limit=limit)
    expired = jobs.filter(status=Job.Status.IN_PROGRESS, lease_expires_at__lt=now)
    for job in expired.order_by("lease_expires_at")[:limit]:
        outcome = _reap(job, now=now)
        if outcome:
            counts[outcome] += 1
    return counts


def _republish_lost_messages(jobs: QuerySet[Job], *, now: datetime, limit: int | None) -> int:
    """Publish again the admitted jobs among `jobs` that the broker has no live message for."""
    grace = settings.JOB_MESSAGE_GRACE
    admitted = jobs.filter(
        status=Job.Status.PENDING, enqueued_at__lt=now - grace, claim_token=None
    ).order_by("enqueued_at")
    candidates = set(admitted.values_list("pk", flat=True)[:limit])
    if not candidates:
        return 0
    try:
        messages = queue.broker_messages(queue_names())
    except redis.RedisError:
        return 0  # A publish would fail too; the next round tries again.
    lost = candidates - _jobs_with_live_messages(messages, now=now)
    if not lost:
        return 0
    republished = mark_enqueued_and_publish(admitted.filter(pk__in=lost), now=now)
    if republished:
        logger.warning("reaper: %d admitted job(s) had no message in the broker", republished)
    return republished


def _jobs_with_live_messages(messages: list[queue.BrokerMessage], *, now: datetime) -> set:
    """The jobs of the messages that will still run: waiting in a queue, or with a live worker.

    A worker starts a message it took at once (prefetch is one per process) or at its ETA,
    and claims its jobs one after another. So a message taken over JOB_MESSAGE_GRACE ago and
    past its ETA shows a live worker only while one of its jobs runs or has just ended; else
    its worker was killed or frozen, and once the reaper has taken back the job it ran, the
    rest of the message would wait for ever.
    """
    cutoff = now - settings.JOB_MESSAGE_GRACE

    def settled(message: queue.BrokerMessage) -> bool:
        taken_long_ago = message.taken_at is not None and message.taken_at < cutoff.timestamp()
        return taken_long_ago and (message.eta is None or message.eta < cutoff)

    live: set = set()
    to_check: list[queue.BrokerMessage] = []
    for message in messages:
        if settled(message):
            to_check.append(message)
        else:
            live |= set(message.job_ids)
    if to_check:
        ids = {job_id for message in to_check for job_id in message.job_ids}
        busy = set(
            Job.objects.filter(pk__in=ids)
            .filter(Q(status=Job.Status.IN_PROGRESS) | Q(completed_at__gte=cutoff))
            .values_list("pk", flat=True)
        )
        for message in to_check:
            if busy.intersection(message.job_ids):
                live |= set(message.job_ids)
    return live


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
