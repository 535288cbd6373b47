"""What clients ask for: submitting, cancelling and retrying jobs."""

import contextlib
import logging
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict, Unpack

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from job_system.cache import cache_redis
from job_system.logging import bind_job, job_log_scope
from jobs import handlers, metrics, queue
from jobs.idempotency import request_fingerprint
from jobs.models import DEFAULT_PRIORITY, Job
from jobs.services import admission, transitions
from jobs.services.common import (
    IdempotencyConflict,
    JobStateError,
    TooManyActiveJobs,
    log_fields,
    raise_if_owner_deleted,
)
from webhooks.endpoints import callbacks_create

logger = logging.getLogger(__name__)


class JobFields(TypedDict):
    """What a client says about a new job: the validated body of POST /api/jobs/."""

    name: str
    parameters: dict[str, Any]
    job_type: NotRequired[str]
    description: NotRequired[str]
    scheduled_time: NotRequired[datetime | None]
    max_retries: NotRequired[int | None]
    timeout_seconds: NotRequired[int | None]
    priority: NotRequired[int]
    # A one-off webhook endpoint for the job's terminal event.
    callback_url: NotRequired[str]


@job_log_scope
def job_create(
    *, owner, idempotency_key: str = "", **fields: Unpack[JobFields]
) -> tuple[Job, bool]:
    """Store a pending job, publish it after commit if due soon; return (job, created).

    With an idempotency key that this owner used before, nothing is created: the earlier job
    comes back if the request asked for the same job, and IdempotencyConflict is raised if not.
    """
    callback_url = fields.pop("callback_url", "")
    job = _new_job(owner=owner, now=timezone.now(), **fields)

    def insert() -> None:
        bind_job(job)
        admit = _admit_at_once(owner=owner, jobs=[job])
        # On PostgreSQL the job and its event are one statement, which commits on its own:
        # BEGIN and COMMIT would be two more round trips, with the owner's event numbers
        # locked meanwhile. A callback commits with them. Inside a caller's transaction, a
        # savepoint keeps a lost idempotency race from spoiling it. Published after commit.
        together = callback_url or connection.in_atomic_block
        with transaction.atomic() if together else nullcontext():
            transitions.job_insert(job)
            if callback_url:
                callbacks_create(jobs=[job], urls=[callback_url])
            _publish_or_admit_on_commit([job], admit)

    [job], created = _insert_once(
        owner=owner, jobs=[job], idempotency_key=idempotency_key, endpoint="job", insert=insert
    )
    if created:
        logger.info("job created", extra=log_fields(job.pk, job))
        metrics.job_created(job)
    return job, created


def jobs_create_bulk(
    *, owner, specs: list[JobFields], idempotency_key: str = ""
) -> tuple[list[Job], bool]:
    """Store many validated jobs in one transaction, then publish those due soon together.

    All or nothing: one bulk INSERT, so either every job exists or none does. Return the jobs
    in the order of `specs`, and whether they were created: an idempotency key works as in
    job_create(), for the whole batch.
    """
    now = timezone.now()
    specs = [dict(spec) for spec in specs]
    callback_urls = [spec.pop("callback_url", "") for spec in specs]
    jobs = [_new_job(owner=owner, now=now, **spec) for spec in specs]
    for position, job in enumerate(jobs):
        job.batch_position = position

    def insert() -> None:
        admit = _admit_at_once(owner=owner, jobs=jobs)
        with transaction.atomic():
            transitions.jobs_insert(jobs)
            if any(callback_urls):
                callbacks_create(jobs=jobs, urls=callback_urls)
            _publish_or_admit_on_commit(jobs, admit)

    jobs, created = _insert_once(
        owner=owner, jobs=jobs, idempotency_key=idempotency_key, endpoint="bulk", insert=insert
    )
    if created:
        for job in jobs:
            metrics.job_created(job)
        logger.info("%d jobs created in one request", len(jobs))
    return jobs, created


def _insert_once(
    *,
    owner,
    jobs: list[Job],
    idempotency_key: str,
    endpoint: Literal["job", "bulk"],
    insert: Callable[[], None],
) -> tuple[list[Job], bool]:
    """Store the jobs of one request with `insert`, within the owner's cap; (jobs, created).

    With an idempotency key that made jobs before, those come back instead, in request order.
    """
    if idempotency_key:
        fingerprint = request_fingerprint(endpoint, jobs)
        for job in jobs:
            job.idempotency_key, job.request_fingerprint = idempotency_key, fingerprint
        if earlier := _made_earlier(owner=owner, request=jobs):
            return earlier, False
    _check_active_job_cap(owner.pk, adding=len(jobs))
    try:
        insert()
    except IntegrityError:
        _uncount_active_jobs(owner.pk, len(jobs))
        # Another request with the same key won the race; answer as if we had come second.
        if earlier := _made_earlier(owner=owner, request=jobs):
            return earlier, False
        raise_if_owner_deleted(owner)
        raise
    return jobs, True


def _made_earlier(*, owner, request: list[Job]) -> list[Job]:
    """Return the jobs an earlier request with this request's key made, in order; [] if none.

    Raises IdempotencyConflict when that request asked for other jobs.
    """
    key = request[0].idempotency_key
    if not key:
        return []
    earlier = list(Job.objects.filter(owner=owner, idempotency_key=key).order_by("batch_position"))
    if earlier and earlier[0].request_fingerprint != request[0].request_fingerprint:
        raise IdempotencyConflict(job=earlier[0])
    return earlier


def idempotency_key_used(*, owner, idempotency_key: str) -> bool:
    """Whether this owner sent a request with this Idempotency-Key before."""
    return Job.objects.filter(owner=owner, idempotency_key=idempotency_key).exists()


def _new_job(
    *,
    owner,
    now: datetime,
    name: str,
    job_type: str = handlers.DEFAULT_JOB_TYPE,
    parameters: dict[str, Any],
    description: str = "",
    scheduled_time: datetime | None = None,
    max_retries: int | None = None,
    timeout_seconds: int | None = None,
    priority: int = DEFAULT_PRIORITY,
) -> Job:
    handler = handlers.get(job_type)
    return Job(
        owner=owner,
        name=name,
        description=description,
        job_type=job_type,
        parameters=parameters,
        scheduled_time=scheduled_time,
        max_retries=handler.max_retries if max_retries is None else max_retries,
        timeout_seconds=timeout_seconds or handler.timeout_seconds,
        queue=handler.queue,
        priority=priority,
        created_at=now,
        run_after=_run_after(scheduled_time, now=now),
    )


def _run_after(scheduled_time: datetime | None, *, now: datetime) -> datetime:
    """When a job may run: its scheduled time, or now if it has none or it has passed."""
    return max(scheduled_time or now, now)


def _admit_at_once(*, owner, jobs: list[Job]) -> list[str]:
    """Admit the jobs in their request if nothing stops them; else return their queues.

    Jobs due within the look-ahead are admitted at once, with an ETA if they are not due yet,
    when no limit applies and nobody waits (admission.may_admit_at_once): that is every job
    on a lightly loaded system. Otherwise an admission picks them in their turn, right after
    the request; later ones wait in the database for Beat's dispatcher.
    """
    now = timezone.now()
    soon = [job for job in jobs if job.run_after <= queue.publish_horizon(now)]
    if not soon:
        return []
    if admission.may_admit_at_once(owner=owner, jobs=soon):
        for job in soon:
            job.enqueued_at = now
        return []
    return sorted({job.queue for job in soon})


def _publish_or_admit_on_commit(jobs: list[Job], admit: list[str]) -> None:
    queue.after_commit(
        messages=[queue.message_for(job) for job in jobs if job.enqueued_at],
        admit=admit,
        from_request=True,
    )


# Counting a user's active jobs reads an index entry per job, up to the cap (10,000 by default),
# which made each submission slower the more jobs were waiting. So the database count is taken
# at most once every ACTIVE_COUNT_SECONDS per user and kept in Redis, where each submission
# adds its jobs. Jobs that finish in between still count until the next recount: near the cap,
# a client may be refused up to that long after room was made.
ACTIVE_COUNT_SECONDS = 2

# INCRBY only while the count exists: an INCRBY on an expired key would restart it from 0.
_ADD_TO_COUNT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""


def _check_active_job_cap(owner_id: int, adding: int = 1) -> None:
    # A count, not a lock: concurrent requests can pass the cap by a few, which is fine for a
    # resource limit and keeps submissions from queueing behind one another.
    limit = settings.MAX_ACTIVE_JOBS_PER_USER
    key = _active_count_key(owner_id)
    client = cache_redis()
    try:
        total = client.eval(_ADD_TO_COUNT, 1, key, adding)
    except redis.RedisError:
        # Redis restarting: count in the database, as every submission once did.
        total = _count_active_jobs(owner_id, limit) + adding
        if total > limit:
            raise TooManyActiveJobs(limit=limit) from None
        return
    if total is None:
        total = _count_active_jobs(owner_id, limit) + adding
        if not client.set(key, total, ex=ACTIVE_COUNT_SECONDS, nx=True):
            # Another request counted at the same moment: add to its count.
            total = client.eval(_ADD_TO_COUNT, 1, key, adding) or total
    if total > limit:
        _uncount_active_jobs(owner_id, adding)  # Refused jobs do not count.
        raise TooManyActiveJobs(limit=limit)


def _count_active_jobs(owner_id: int, limit: int) -> int:
    active = Job.objects.filter(owner_id=owner_id, status__in=Job.ACTIVE_STATUSES)
    return active[:limit].count()


def _uncount_active_jobs(owner_id: int, count: int) -> None:
    """Take jobs that were counted but did not become active off the owner's count."""
    # Through _ADD_TO_COUNT, not DECRBY, which would recreate an expired count with no expiry.
    # Without Redis there is no count to correct: the next one is taken afresh.
    with contextlib.suppress(redis.RedisError):
        cache_redis().eval(_ADD_TO_COUNT, 1, _active_count_key(owner_id), -count)


def _active_count_key(owner_id: int) -> str:
    return cache.make_and_validate_key(f"active-jobs:{owner_id}")


@job_log_scope
def job_cancel(*, job: Job) -> Job:
    """Cancel a pending or running job; a running handler notices at its next report."""
    now = timezone.now()
    # A running job's attempt is recorded as cancelled with it: the cancelled row still holds
    # that attempt's claim.
    cancelled = transitions.apply(transitions.CANCEL, job, now=now, completed_at=now)
    job.refresh_from_db()
    if not cancelled:
        raise JobStateError(f"The job is already {job.status} and cannot be cancelled.", job=job)
    logger.info("job cancelled", extra=log_fields(job.pk, job))
    return job


@job_log_scope
def job_retry(*, job: Job) -> Job:
    """Put a failed or cancelled job back in the queue as a new run, with its own retries.

    Attempts keep their numbers across runs; only max_retries starts counting afresh. The job
    becomes active again, so it takes a place under the owner's cap as a new job does.
    """
    # Only a job that looks retryable is counted, so that retrying a finished one is answered
    # with the state conflict it is rather than a full cap; the UPDATE below decides.
    counted = job.status in transitions.RERUN.sources
    if counted:
        _check_active_job_cap(job.owner_id)
    now = timezone.now()
    job.run_after = _run_after(job.scheduled_time, now=now)
    job.enqueued_at = None
    admit = _admit_at_once(owner=job.owner, jobs=[job])
    with transaction.atomic():
        requeued = transitions.apply(
            transitions.RERUN, job, now=now, run_after=job.run_after, enqueued_at=job.enqueued_at
        )
        if requeued:
            _publish_or_admit_on_commit([job], admit)
    job.refresh_from_db()
    if not requeued:
        if counted:
            _uncount_active_jobs(job.owner_id, 1)
        raise JobStateError(
            f"Only failed or cancelled jobs can be retried; this one is {job.status}.", job=job
        )
    logger.info("job requeued by its owner", extra=log_fields(job.pk, job))
    return job
