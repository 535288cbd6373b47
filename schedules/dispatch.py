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
policy is decided at the tick, against the schedule's latest job: while that job is active,
the schedule is not taken before its tick, and at the tick it is skipped or buffered.
"""

import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from jobs import handlers
from jobs.models import Job
from jobs.services import jobs_create_for_owners
from schedules.models import CatchupPolicy, OverlapPolicy, Schedule, ScheduleRun
from schedules.ticks import Timing

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
                )
                # Overlap is decided at the tick, not ahead: a schedule whose latest job is
                # still active waits for its tick, or for that job to end.
                .exclude(
                    ~Q(overlap_policy=OverlapPolicy.ALLOW),
                    next_fire_at__gt=now,
                    latest_job__status__in=Job.ACTIVE_STATUSES,
                )
                .order_by("next_fire_at")
            )
        )
        fires: list[Fire] = []
        for schedule in due:
            planned, schedule.next_fire_at = plan_fires(schedule, now=now, horizon=horizon)
            fires.extend(planned)
        recorded = runs_record(fires, now=now)
        _save_bookkeeping(due, ["next_fire_at", "buffered_fire_at", "latest_job"])
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
        _save_bookkeeping(ready, ["buffered_fire_at", "latest_job"])
    return recorded


def _save_bookkeeping(schedules: list[Schedule], fields: list[str]) -> None:
    """Write the dispatcher's fields of the locked schedules, each its own values.

    As an INSERT of the rows as they are that conflicts on the key and updates the fields:
    bulk_update's CASE WHEN of a clause per row and field took Django longer to build than
    the batch's jobs took to create. The rows are locked, so each conflicts and none is new.
    """
    Schedule.objects.bulk_create(
        schedules, update_conflicts=True, unique_fields=["id"], update_fields=fields
    )


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
        due, following = ticks_until(timing, now, horizon, inclusive=False)
    else:
        fires = []
        due, following = ticks_until(timing, schedule.next_fire_at, horizon, inclusive=True)
    # Each tick's next one, which caps its jitter; the last one's is `following`.
    for tick, after in zip(due, [*due[1:], following], strict=False):
        starts = tick + jitter(schedule, tick, after)
        fires.append(Fire(schedule, tick, ScheduleRun.Kind.TICK, starts))
    return fires, following


# Schedules due together often share a timetable ("0 7 * * *" in one zone): working out the
# same ticks again for each of them was much of the dispatcher's time when thousands fired in
# one minute.
@functools.lru_cache(maxsize=1024)
def ticks_until(
    timing: Timing, start: datetime, horizon: datetime, *, inclusive: bool
) -> tuple[tuple[datetime, ...], datetime | None]:
    """The ticks from `start` up to `horizon`, and the first one after it (None if none)."""
    due: list[datetime] = []
    for tick in timing.ticks_from(start, inclusive=inclusive):
        if tick > horizon:
            return tuple(due), tick
        due.append(tick)
    return tuple(due), None


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


def runs_record(fires: list[Fire], *, now: datetime | None = None) -> int:
    """Apply each schedule's overlap policy, create the jobs, record the runs; count them.

    Runs in the caller's transaction; sets latest_job, buffered_fire_at and, for a tick
    put off, next_fire_at on the schedules, which the caller saves. A schedule's fires come
    in tick order.

    Overlap is decided at the tick: a tick not yet reached (after `now`) whose schedule is
    busy is put off with the ticks after it, and comes up again at the next dispatch.
    """
    now = now or timezone.now()
    to_create: list[Fire] = []
    skipped: list[ScheduleRun] = []
    busy: set = set()  # Schedules given a job in this batch.
    put_off: set = set()
    for fire in fires:
        schedule = fire.schedule
        overlap = schedule.overlap_policy
        if schedule.pk in put_off:
            continue
        if handlers.find(schedule.job_type) is None:
            # A type taken out of the code since the schedule was made: each tick says so
            # among the runs, and the batch's other schedules still fire.
            skipped.append(_run(fire, skipped=ScheduleRun.Skipped.UNKNOWN_JOB_TYPE))
            continue
        if (
            fire.kind != ScheduleRun.Kind.TRIGGER
            and overlap != OverlapPolicy.ALLOW
            and (_is_busy(schedule, busy))
        ):
            if fire.kind == ScheduleRun.Kind.TICK and fire.fire_time > now:
                put_off.add(schedule.pk)
                schedule.next_fire_at = fire.fire_time
                continue
            if overlap == OverlapPolicy.BUFFER_ONE and not schedule.buffered_fire_at:
                schedule.buffered_fire_at = fire.fire_time
                continue
            skipped.append(_run(fire, skipped=ScheduleRun.Skipped.OVERLAP))
            continue
        busy.add(schedule.pk)
        to_create.append(fire)
    created, refused = _create_jobs(to_create)
    skipped.extend(refused)
    ScheduleRun.objects.bulk_create(skipped, ignore_conflicts=True)
    return created + len(skipped)


def _is_busy(schedule: Schedule, busy: set) -> bool:
    latest = schedule.latest_job
    return schedule.pk in busy or (latest is not None and latest.status in Job.ACTIVE_STATUSES)


def _run(fire: Fire, **fields) -> ScheduleRun:
    return ScheduleRun(schedule=fire.schedule, fire_time=fire.fire_time, kind=fire.kind, **fields)


def _create_jobs(fires: list[Fire]) -> tuple[int, list[ScheduleRun]]:
    """The ticks' jobs and runs, every owner's in one savepoint; (runs created, runs refused).

    One INSERT for all the owners' jobs and one for their runs: one owner at a time, a batch
    took a dozen round trips per owner, too slow for thousands of ticks due in one minute.
    Should the batch fail, it tries again without the ticks that had fired before.
    """
    owners = get_user_model().objects.in_bulk({fire.schedule.owner_id for fire in fires})
    # An owner that is gone: the account is being deleted, and its schedules with it.
    fires = [fire for fire in fires if fire.schedule.owner_id in owners]
    if not fires:
        return 0, []
    by_owner: dict = {}
    for fire in fires:
        by_owner.setdefault(owners[fire.schedule.owner_id], []).append(fire)
    made = None
    try:
        with transaction.atomic():
            made = jobs_create_for_owners(
                specs={owner: [_job_spec(f) for f in its] for owner, its in by_owner.items()}
            )
            # Both by owner, in the order of the specs.
            made_fires = [f for o, its in by_owner.items() if o.pk in made.created for f in its]
            jobs = [job for owner_jobs in made.created.values() for job in owner_jobs]
            ScheduleRun.objects.bulk_create(
                [_run(fire, job=job) for fire, job in zip(made_fires, jobs, strict=True)]
            )
    except IntegrityError:
        if made is not None:
            # The runs' INSERT failed and took the jobs with it: left counted, they would
            # refuse their owners' next jobs until the counts are taken afresh.
            made.uncount()
        return _create_jobs_again(fires)
    for fire, job in zip(made_fires, jobs, strict=True):
        fire.schedule.latest_job = job
    refused = [
        _run(fire, skipped=ScheduleRun.Skipped.ACTIVE_JOB_CAP)
        for fire in fires
        if fire.schedule.owner_id in made.refused
    ]
    return len(jobs), refused


def _create_jobs_again(fires: list[Fire]) -> tuple[int, list[ScheduleRun]]:
    """After a failed batch, create the jobs of its ticks that had not fired before."""
    fired = set(
        ScheduleRun.objects.filter(
            schedule__in={fire.schedule.pk for fire in fires},
            fire_time__in={fire.fire_time for fire in fires},
        ).values_list("schedule_id", "fire_time")
    )
    rest = [fire for fire in fires if (fire.schedule.pk, fire.fire_time) not in fired]
    if len(rest) == len(fires):
        # Not a tick that fired before: leave these ticks, rather than stop every schedule in
        # the batch at each dispatch.
        logger.exception("could not create the jobs of %d tick(s)", len(fires))
        return 0, []
    logger.warning("%d tick(s) had fired already", len(fires) - len(rest))
    return _create_jobs(rest) if rest else (0, [])


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
