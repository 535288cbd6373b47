"""What clients ask for: submitting, cancelling and retrying jobs."""

import logging
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict, Unpack

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from job_system.logging import bind_job, job_log_scope
from jobs import handlers, metrics, queue
from jobs.idempotency import request_fingerprint
from jobs.models import DEFAULT_PRIORITY, Job
from jobs.services import active_cap, admission, transitions
from jobs.services.common import (
    IdempotencyConflict,
    JobStateError,
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


@dataclass
class OwnersJobs:
    """What jobs_create_for_owners() did: each owner's new jobs, and the owners it refused."""

    created: dict[int, list[Job]] = field(default_factory=dict)  # In the order of the specs.
    refused: set[int] = field(default_factory=set)  # Their cap was full: none of theirs made.

    def uncount(self) -> None:
        """Take the jobs off their owners' active counts: the caller's transaction, which
        held them, rolled back."""
        active_cap.active_jobs_uncount({pk: len(jobs) for pk, jobs in self.created.items()})


def jobs_create_for_owners(*, specs: Mapping[Any, list[JobFields]]) -> OwnersJobs:
    """Store many owners' validated jobs with one bulk INSERT, each owner within its cap.

    For the schedules' dispatcher, which submits for many owners at once: one statement and
    one Redis round trip for the caps, where one submission per owner took a dozen round trips
    each. All or nothing for the owners within their caps: their jobs exist together, or
    none do. The jobs of an owner they would take past its cap are not made, and it is in
    `refused`. No idempotency key, and no callback: the dispatcher's once-only is its runs'.
    """
    now = timezone.now()
    jobs_of = {
        owner: [_new_job(owner=owner, now=now, **spec) for spec in owner_specs]
        for owner, owner_specs in specs.items()
        if owner_specs
    }
    made = OwnersJobs(
        refused=active_cap.active_jobs_count_many({o.pk: len(js) for o, js in jobs_of.items()})
    )
    admit: set[str] = set()
    for owner, owner_jobs in jobs_of.items():
        if owner.pk not in made.refused:
            made.created[owner.pk] = owner_jobs
            admit |= set(_admit_at_once(owner=owner, jobs=owner_jobs))
    jobs = [job for owner_jobs in made.created.values() for job in owner_jobs]
    if not jobs:
        return made
    try:
        with transaction.atomic():
            transitions.jobs_insert(jobs)
            _publish_or_admit_on_commit(jobs, sorted(admit))
    except IntegrityError:
        made.uncount()
        raise
    for job in jobs:
        metrics.job_created(job)
    logger.info("%d jobs of %d owners created together", len(jobs), len(made.created))
    return made


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
    active_cap.active_jobs_count(owner.pk, adding=len(jobs))
    try:
        insert()
    except IntegrityError:
        active_cap.active_jobs_uncount({owner.pk: len(jobs)})
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
        active_cap.active_jobs_count(job.owner_id)
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
            active_cap.active_jobs_uncount({job.owner_id: 1})
        raise JobStateError(
            f"Only failed or cancelled jobs can be retried; this one is {job.status}.", job=job
        )
    logger.info("job requeued by its owner", extra=log_fields(job.pk, job))
    return job
