"""What users and staff ask of schedules: create, change, pause, resume, run now, delete.

Pause and resume are conditional UPDATEs. A schedule's next tick is worked out from now
whenever its timing changes or it is resumed: ticks that passed while it was paused or
before the change are not run (the catch-up policy is for ticks the service missed).
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from job_system.deletion import delete_locked
from schedules.dispatch import Fire, runs_record
from schedules.models import Schedule, ScheduleRun

# The fields that decide when a schedule fires.
TIMING_FIELDS = ("cron", "interval_seconds", "time_zone", "start_at", "end_at")


class TooManySchedules(Exception):
    """The owner has as many schedules as one user may."""

    def __init__(self, *, limit: int) -> None:
        super().__init__(
            f"You already have {limit} schedules, the most one user may have. Delete one first."
        )


def first_tick(schedule: Schedule, *, now: datetime) -> datetime | None:
    return next(schedule.timing().ticks_from(now), None)


def schedule_create(*, owner, **fields: Any) -> Schedule:
    """Store a schedule, its first tick after now; within the owner's limit."""
    schedule = Schedule(owner=owner, **fields)
    schedule.next_fire_at = first_tick(schedule, now=timezone.now())
    with transaction.atomic():
        # One request at a time per owner takes the last place. NO KEY, so that inserts of
        # the owner's jobs (which lock the row FOR KEY SHARE) do not wait.
        get_user_model().objects.select_for_update(no_key=True).filter(pk=owner.pk).exists()
        limit = settings.SCHEDULES_PER_USER
        if Schedule.objects.filter(owner=owner)[:limit].count() >= limit:
            raise TooManySchedules(limit=limit)
        schedule.save(force_insert=True)
    return schedule


def schedule_update(*, schedule: Schedule, **fields: Any) -> Schedule:
    """Change a schedule; a change of its timing starts its ticks afresh from now.

    Raises Schedule.DoesNotExist if the schedule was deleted meanwhile.
    """
    enabled = fields.pop("enabled", None)
    for name, value in fields.items():
        setattr(schedule, name, value)
    changed = set(fields)
    if changed & set(TIMING_FIELDS):
        # The one of cron and interval the client gave replaces the other.
        if "cron" in fields:
            schedule.interval_seconds = None
        elif "interval_seconds" in fields:
            schedule.cron = ""
        schedule.next_fire_at = first_tick(schedule, now=timezone.now())
        changed |= {"cron", "interval_seconds", "next_fire_at"}
    if changed:
        schedule.updated_at = timezone.now()
        # Only what changed: the dispatcher writes the bookkeeping fields meanwhile.
        values = {name: getattr(schedule, name) for name in [*changed, "updated_at"]}
        if not Schedule.objects.filter(pk=schedule.pk).update(**values):
            raise Schedule.DoesNotExist("The schedule was deleted meanwhile.")
    if enabled is not None:
        schedule = _set_enabled(schedule, enabled)
    return schedule


def schedule_pause(*, schedule: Schedule) -> Schedule:
    """Stop firing; a tick held back by buffer_one is dropped."""
    return _set_enabled(schedule, False)


def schedule_resume(*, schedule: Schedule) -> Schedule:
    """Fire again from the next tick after now."""
    return _set_enabled(schedule, True)


def _set_enabled(schedule: Schedule, enabled: bool) -> Schedule:
    if enabled:
        changes = {"next_fire_at": first_tick(schedule, now=timezone.now())}
    else:
        changes = {"buffered_fire_at": None}
    # Only a change of state moves next_fire_at: resuming a running schedule keeps its tick.
    Schedule.objects.filter(pk=schedule.pk, enabled=not enabled).update(
        enabled=enabled, updated_at=timezone.now(), **changes
    )
    schedule.refresh_from_db()
    return schedule


def schedule_trigger(*, schedule: Schedule) -> ScheduleRun:
    """Run the schedule's job now, whatever its overlap policy.

    Raises Schedule.DoesNotExist if the schedule was deleted meanwhile.
    """
    now = timezone.now()
    with transaction.atomic():
        # Locked before the run is added, so that a delete waits for it to commit (and
        # collects it), or has committed and the schedule is gone (schedule_delete).
        Schedule.objects.select_for_update(no_key=True).only("pk").get(pk=schedule.pk)
        runs_record([Fire(schedule, now, ScheduleRun.Kind.TRIGGER, now)])
        run = ScheduleRun.objects.select_related("job").get(schedule=schedule, fire_time=now)
        if run.job_id:
            Schedule.objects.filter(pk=schedule.pk).update(latest_job=run.job)
    return run


def schedule_delete(*, schedule: Schedule) -> None:
    """Delete a schedule and its runs; the jobs it made stay.

    Safe against runs being added meanwhile: the dispatcher skips a locked schedule, and a
    trigger waits for the lock and finds the schedule gone (delete_locked).
    """
    delete_locked(schedule)
