"""Deleting expired jobs with their results, attempts and events (jobs.retention says when).

The pruner works in batches, each one short transaction:
1. choose up to JOB_PRUNE_BATCH_SIZE expired jobs, the soonest expired first, tell their
   owners' event streams (events.retention.events_mark_pruned) and read their rows, before
   the transaction, so that it neither waits for the streams nor for the disk;
2. in the transaction, lock them under the same conditions again, so a job rerun meanwhile
   stays (FOR UPDATE SKIP LOCKED on PostgreSQL, so two pruners take different jobs and
   neither waits for a job being rerun; on SQLite one writer runs at a time);
3. delete what refers to them: attempts, results, events with their webhook deliveries, and
   callback endpoints; then the jobs.
Foreign keys are checked as each statement ends (job_system.deletion), not at the commit,
which would run every check of the batch in one statement that holds all the batch's locks.
So every statement is bounded: none deletes more than JOB_PRUNE_BATCH_SIZE rows, and the
jobs' DELETEs, whose checks cost most, delete a quarter of that each. Pending and running
jobs are never candidates.

Finished jobs from before retention have no expires_at: each run stamps them first.
"""

import logging
import uuid
from datetime import datetime
from time import monotonic, sleep

from django.conf import settings
from django.db import transaction
from django.db.models import SET_NULL, Exists, OuterRef, QuerySet
from django.utils import timezone

from events.models import Event
from events.retention import events_delete, events_mark_pruned, webhooks_delete
from job_system.deletion import (
    commit_without_waiting_for_the_disk,
    delete_in_batches,
    foreign_keys_checked_per_statement,
)
from jobs import retention
from jobs.models import Job, JobAttempt, JobResult
from jobs.services import transitions
from schedules.models import ScheduleRun
from webhooks.models import Delivery, Endpoint

logger = logging.getLogger(__name__)

# The most rows one statement deletes, whatever JOB_PRUNE_BATCH_SIZE says (settings checks
# it too): bigger statements hold their locks and the WAL longer.
MAX_BATCH_SIZE = 5_000
# A deleted job costs PostgreSQL two index lookups for each of the six foreign keys that refer
# to jobs (foreign_keys_checked_per_statement), an event two, an attempt none: the jobs'
# DELETEs take this fraction of the batch each, to last about as long as the others.
JOB_DELETE_FRACTION = 4


def expired_jobs(*, now: datetime, among: QuerySet[Job] | None = None) -> QuerySet[Job]:
    """The jobs the pruner may delete at `now`: finished and past their expires_at.

    Both the pruner's choice and its DELETE read this, so an exclusion added here (a job
    that something still shows) protects a job in both.
    """
    jobs = Job.objects.filter(status__in=Job.FINISHED_STATUSES, expires_at__lte=now)
    jobs = jobs.filter(~Exists(_shown_by_a_schedule()))
    if among is not None:
        jobs = jobs.filter(pk__in=among.order_by().values("pk"))
    return jobs


def _shown_by_a_schedule() -> QuerySet[ScheduleRun]:
    """The run that made the outer job, if its schedule shows it among its last runs."""
    return ScheduleRun.objects.filter(job=OuterRef("pk")).shown()


def jobs_prune_expired(
    *,
    among: QuerySet[Job] | None = None,
    pause_ratio: float = 0.0,
    max_seconds: float | None = None,
) -> dict[str, int]:
    """Delete the jobs that have expired (of `among`, if given); count what was done.

    After each batch, pause `pause_ratio` times as long as the batch took: the pruner shares
    the database server's CPUs with the requests it must not slow down, and a busier server
    makes its batches, and so its pauses, longer. Start no batch after `max_seconds`, pauses
    included: Beat's run shares the housekeeping worker with admission, the reaper and the
    schedules' dispatcher, which must not wait long; the next run goes on where it stopped.
    """
    batch_size = min(settings.JOB_PRUNE_BATCH_SIZE, MAX_BATCH_SIZE)
    deadline = monotonic() + max_seconds if max_seconds is not None else float("inf")
    stamped = jobs_stamp_expiry(batch_size=batch_size, deadline=deadline)
    # One `now` for the run: jobs expiring while it runs wait for the next one, so it ends.
    now = timezone.now()
    deleted = 0
    while monotonic() < deadline:
        began = monotonic()
        if not (pruned := _prune_batch(expired_jobs(now=now, among=among), batch_size=batch_size)):
            break
        deleted += pruned
        sleep(min((monotonic() - began) * pause_ratio, max(0.0, deadline - monotonic())))
    counts = {"stamped": stamped, "deleted": deleted}
    if any(counts.values()):
        logger.info("pruner: %s", counts)
    return counts


def jobs_stamp_expiry(*, batch_size: int, deadline: float = float("inf")) -> int:
    """Give the finished jobs that have no expires_at (from before retention) theirs, a
    batch at a time until the `deadline` (monotonic)."""
    unstamped = Job.objects.filter(status__in=Job.FINISHED_STATUSES, expires_at=None)
    fields = ("status", "completed_at", "updated_at", *retention.READS)
    stamped = 0
    while monotonic() < deadline and (
        jobs := list(unstamped.order_by("completed_at").only(*fields)[:batch_size])
    ):
        stamped += transitions.stamp_expiry(jobs)
    return stamped


def _prune_batch(expired: QuerySet[Job], *, batch_size: int) -> int:
    """Delete one batch of `expired` jobs and what refers to them; return how many jobs.

    0 when there are none left, or when another pruner holds every one of them: it deletes
    the rest.
    """
    candidates = list(expired.order_by("expires_at").values_list("pk", flat=True)[:batch_size])
    if not candidates:
        return 0
    # Before the batch's transaction, in a short one of its own, so that no owner's stream
    # (which numbers each of their events) waits for the batch: told early, a stream resuming
    # from before these events only skips to after them.
    events_mark_pruned(Event.objects.filter(job__in=candidates))
    _read_rows_of(candidates)
    with transaction.atomic(), foreign_keys_checked_per_statement(expired.db):
        commit_without_waiting_for_the_disk(expired.db)
        # Locked, and checked against the conditions again (a job rerun since it was chosen
        # stays): nothing changes these jobs until the commit, so what refers to them can go
        # first, and the jobs last.
        taken = list(
            expired.filter(pk__in=candidates)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        _delete_rows_of(taken, batch_size=batch_size)
        per_statement = max(1, batch_size // JOB_DELETE_FRACTION)
        for first in range(0, len(taken), per_statement):
            jobs = Job.objects.filter(pk__in=taken[first : first + per_statement])
            jobs._raw_delete(jobs.db)
    return len(taken)


def _read_rows_of(job_ids: list[uuid.UUID]) -> None:
    """Read the attempts and results of these jobs, without locking anything.

    Expired rows are the oldest, seldom in the database server's cache. Read here, their pages
    are in it by the time the batch's DELETEs change them, which then hold their locks without
    waiting for the disk. In the pruning bench, one DELETE of 250 attempts whose pages had to
    be read took 135 ms. The jobs' pages were read in choosing them, the events' in telling
    their streams (events_mark_pruned).
    """
    for rows in (JobAttempt.objects, JobResult.objects):
        list(rows.filter(job__in=job_ids).values_list("pk", flat=True))


def _delete_rows_of(job_ids: list[uuid.UUID], *, batch_size: int) -> None:
    """Delete every row that refers to these jobs, in the caller's transaction."""
    if not job_ids:
        return
    _clear_nullable_references(job_ids)
    delete_in_batches(JobAttempt.objects.filter(job__in=job_ids), batch_size=batch_size)
    # One result per job at most: one statement, without the empty one after it that
    # delete_in_batches needs to know a full batch was the last.
    results = JobResult.objects.filter(job__in=job_ids)
    results._raw_delete(results.db)
    events = Event.objects.filter(job__in=job_ids).order_by().values_list("pk", flat=True)
    while event_ids := list(events[:batch_size]):
        events_delete(event_ids=event_ids, batch_size=batch_size)
    # Callbacks whose event had gone already (events are kept a shorter time).
    if callbacks := list(Endpoint.objects.filter(job__in=job_ids).values_list("pk", flat=True)):
        webhooks_delete(Delivery.objects.none(), callbacks=callbacks, batch_size=batch_size)


def _clear_nullable_references(job_ids: list[uuid.UUID]) -> None:
    """Do what on_delete=SET_NULL would: the raw DELETE above skips Django's collector.

    Every such reference to a job, hidden ones included (a schedule's runs and its latest
    job), so that a new one is never left to fail the batch at the deferred foreign-key check.
    Today's are one row per job at most (a run's job is one-to-one, a schedule's latest job is
    its own), so each UPDATE stays within the batch's size; a many-to-one one would need its
    own batches.
    """
    for relation in Job._meta.get_fields(include_hidden=True):
        if relation.auto_created and relation.is_relation and relation.on_delete is SET_NULL:
            field = relation.field.name
            references = relation.related_model._base_manager.filter(**{f"{field}__in": job_ids})
            references.update(**{field: None})
