"""The dispatcher: each due tick of a schedule becomes one job, and only one.

Beat runs schedules_dispatch_due every second on the `housekeeping` queue. It takes the due
schedules by the indexed next_fire_at, a batch at a time, so its cost follows the schedules
that are due, not the table. One transaction per batch creates the batch's jobs through the
jobs' own submission service (the owner's cap, fair admission, the job.pending event, publish
after commit), records each tick in ScheduleRun, and advances next_fire_at: a crash leaves all
of it or none. On PostgreSQL a batch locks its schedules FOR UPDATE SKIP LOCKED, so several
dispatchers take different schedules; SQLite runs one writer at a time. Should a tick come up
again all the same (an edit that moves next_fire_at back over a tick already fired), the
unique (schedule, fire_time) of ScheduleRun refuses it, and its job is rolled back with it.

A tick's job is created up to SCHEDULE_LOOKAHEAD_SECONDS before its fire time, as a job
scheduled for it (plus its jitter): the jobs' dispatcher publishes it with an ETA, so it
starts on time and never early, even when thousands of ticks share one minute. The overlap
policy is applied then, against the schedule's latest job.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from jobs.models import Job
from jobs.services import TooManyActiveJobs, jobs_create_bulk
from schedules.models import CatchupPolicy, OverlapPolicy, Schedule, ScheduleRun
from schedules.ticks import Timing
from users.exceptions import AccountDeleted

logger = logging.getLogger(__name__)


@dataclass
class Fire:
    """A tick to run: its nominal fire time, and when its job may start."""

    schedule: Schedule
    fire_time: datetime
    kind: str
    starts_at: datetime


def schedules_dispatch_due(*, now: datetime | None = None) -> int:
    """Create the jobs of the ticks due within the look-ahead; count the runs recorded.

    `now` lets a benchmark or a test move through time; the jobs' own times stay real.
    """
    now = now or timezone.now()
    recorded = 0
    while True:
        batch_recorded, taken = _dispatch_batch(now=now)
        recorded += batch_recorded
        if taken < settings.SCHEDULE_DISPATCH_BATCH_SIZE:
            break
    recorded += _release_buffered()
    if recorded:
        logger.info("schedule dispatcher recorded %d run(s)", recorded)
    return recorded


def _locked(schedules: QuerySet[Schedule]) -> QuerySet[Schedule]:
    """A batch of schedules, locked for this transaction; others' locked ones are left out."""
    return (
        schedules.select_for_update(skip_locked=True, of=("self",))
        .select_related("latest_job")
        .only(*[f.name for f in Schedule._meta.concrete_fields], "latest_job__status")[
            : settings.SCHEDULE_DISPATCH_BATCH_SIZE
        ]
    )


def _dispatch_batch(*, now: datetime) -> tuple[int, int]:
    horizon = now + timedelta(seconds=settings.SCHEDULE_LOOKAHEAD_SECONDS)
    with transaction.atomic():
        due = list(
            _locked(
                Schedule.objects.filter(
                    enabled=True, next_fire_at__isnull=False, next_fire_at__lte=horizon
                ).order_by("next_fire_at")
            )
        )
        fires: list[Fire] = []
        for schedule in due:
            planned, schedule.next_fire_at = plan_fires(schedule, now=now, horizon=horizon)
            fires.extend(planned)
        recorded = runs_record(fires)
        Schedule.objects.bulk_update(due, ["next_fire_at", "buffered_fire_at", "latest_job"])
    return recorded, len(due)


def _release_buffered() -> int:
    """Run the ticks that buffer_one held back, for schedules whose latest run has finished."""
    with transaction.atomic():
        ready = list(
            _locked(
                Schedule.objects.filter(buffered_fire_at__isnull=False, enabled=True).exclude(
                    latest_job__status__in=Job.ACTIVE_STATUSES
                )
            )
        )
        if not ready:
            return 0
        now = timezone.now()
        fires = [Fire(s, s.buffered_fire_at, ScheduleRun.Kind.BUFFERED, now) for s in ready]
        for schedule in ready:
            schedule.buffered_fire_at = None
        recorded = runs_record(fires)
        Schedule.objects.bulk_update(ready, ["buffered_fire_at", "latest_job"])
    return recorded


def plan_fires(
    schedule: Schedule, *, now: datetime, horizon: datetime
) -> tuple[list[Fire], datetime | None]:
    """The ticks of a due schedule to run now, and its next tick after them."""
    timing = schedule.timing()
    grace = timedelta(seconds=settings.SCHEDULE_CATCHUP_GRACE_SECONDS)
    if schedule.next_fire_at < now - grace:
        # Missed while the service was down: the catch-up policy says which of the ticks up
        # to now run, each with its own fire time, starting at once.
        fires = [
            Fire(schedule, tick, ScheduleRun.Kind.CATCH_UP, tick)
            for tick in missed_ticks_to_run(schedule, timing, now=now)
        ]
        upcoming = timing.ticks_from(now)
    else:
        fires = []
        upcoming = timing.ticks_from(schedule.next_fire_at, inclusive=True)
    due: list[datetime] = []
    following = None
    for tick in upcoming:
        if tick > horizon:
            following = tick
            break
        due.append(tick)
    # Each tick's next one, which caps its jitter; the last one's is `following`.
    for tick, after in zip(due, [*due[1:], following], strict=False):
        starts = tick + jitter(schedule, tick, after)
        fires.append(Fire(schedule, tick, ScheduleRun.Kind.TICK, starts))
    return fires, following


def missed_ticks_to_run(schedule: Schedule, timing: Timing, *, now: datetime) -> list[datetime]:
    """The missed ticks (next_fire_at to now) that the catch-up policy runs, oldest first."""
    if schedule.catchup_policy == CatchupPolicy.SKIP:
        return []
    newest_first = timing.ticks_back_from(now)
    if schedule.catchup_policy == CatchupPolicy.LATEST:
        latest = next(newest_first, None)
        return [latest] if latest and latest >= schedule.next_fire_at else []
    floor = max(schedule.next_fire_at, now - timedelta(seconds=schedule.catchup_window_seconds))
    ticks: list[datetime] = []
    for tick in newest_first:
        if tick < floor or len(ticks) == settings.SCHEDULE_CATCHUP_MAX_RUNS:
            break
        ticks.append(tick)
    return ticks[::-1]


def jitter(schedule: Schedule, tick: datetime, following: datetime | None) -> timedelta:
    """The delay of a tick's start: the same for a (schedule, tick), and short of the next."""
    room = float(schedule.jitter_seconds)
    if following is not None:
        room = min(room, (following - tick).total_seconds() - 1)
    if room <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule.pk}/{tick.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(milliseconds=int(fraction * room * 1000))


def runs_record(fires: list[Fire]) -> int:
    """Apply each schedule's overlap policy, create the jobs, record the runs; count them.

    Runs in the caller's transaction; sets latest_job and buffered_fire_at on the schedules,
    which the caller saves.
    """
    to_create: list[Fire] = []
    skipped: list[ScheduleRun] = []
    busy: set = set()  # Schedules given a job in this batch.
    for fire in fires:
        schedule = fire.schedule
        overlap = schedule.overlap_policy
        if (
            fire.kind != ScheduleRun.Kind.TRIGGER
            and overlap != OverlapPolicy.ALLOW
            and (_is_busy(schedule, busy))
        ):
            if overlap == OverlapPolicy.BUFFER_ONE and not schedule.buffered_fire_at:
                schedule.buffered_fire_at = fire.fire_time
                continue
            skipped.append(_run(fire, skipped=ScheduleRun.Skipped.OVERLAP))
            continue
        busy.add(schedule.pk)
        to_create.append(fire)
    recorded = 0
    owners = get_user_model().objects.in_bulk({fire.schedule.owner_id for fire in to_create})
    to_create.sort(key=lambda fire: fire.schedule.owner_id)
    for owner_id, group in groupby(to_create, key=lambda fire: fire.schedule.owner_id):
        created, refused = _create_jobs(owner=owners.get(owner_id), fires=list(group))
        recorded += created
        skipped.extend(refused)
    ScheduleRun.objects.bulk_create(skipped, ignore_conflicts=True)
    return recorded + len(skipped)


def _is_busy(schedule: Schedule, busy: set) -> bool:
    latest = schedule.latest_job
    return schedule.pk in busy or (latest is not None and latest.status in Job.ACTIVE_STATUSES)


def _run(fire: Fire, **fields) -> ScheduleRun:
    return ScheduleRun(schedule=fire.schedule, fire_time=fire.fire_time, kind=fire.kind, **fields)


def _create_jobs(*, owner, fires: list[Fire]) -> tuple[int, list[ScheduleRun]]:
    """One owner's ticks: their jobs and runs, in a savepoint; (runs created, runs refused)."""
    if owner is None:
        return 0, []  # The account is being deleted, and its schedules with it.
    try:
        with transaction.atomic():
            jobs, _ = jobs_create_bulk(owner=owner, specs=[_job_spec(fire) for fire in fires])
            ScheduleRun.objects.bulk_create(
                [_run(fire, job=job) for fire, job in zip(fires, jobs, strict=True)]
            )
    except TooManyActiveJobs:
        return 0, [_run(fire, skipped=ScheduleRun.Skipped.ACTIVE_JOB_CAP) for fire in fires]
    except AccountDeleted:
        return 0, []
    except IntegrityError:
        # Some of these ticks were fired before: create the others.
        fired = set(
            ScheduleRun.objects.filter(
                schedule__in={fire.schedule.pk for fire in fires},
                fire_time__in={fire.fire_time for fire in fires},
            ).values_list("schedule_id", "fire_time")
        )
        rest = [fire for fire in fires if (fire.schedule.pk, fire.fire_time) not in fired]
        if len(rest) == len(fires):
            # Not a tick that fired before: leave these ticks, rather than stop every
            # schedule in the batch at each dispatch.
            logger.exception("could not create the jobs of %d tick(s)", len(fires))
            return 0, []
        logger.warning("%d tick(s) had fired already", len(fires) - len(rest))
        return _create_jobs(owner=owner, fires=rest) if rest else (0, [])
    for fire, job in zip(fires, jobs, strict=True):
        fire.schedule.latest_job = job
    return len(jobs), []


def _job_spec(fire: Fire) -> dict:
    schedule = fire.schedule
    return {
        "name": schedule.name,
        "description": f"Schedule {schedule.pk}, tick {fire.fire_time.isoformat()}",
        "job_type": schedule.job_type,
        "parameters": schedule.parameters,
        "timeout_seconds": schedule.timeout_seconds,
        "max_retries": schedule.max_retries,
        "priority": schedule.priority,
        "scheduled_time": fire.starts_at,
    }
