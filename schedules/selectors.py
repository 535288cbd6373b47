"""Reads about schedules: a user's own, a schedule's latest runs, and the jobs they show.

The owner filter is written once, in schedules_of(). LAST_RUNS is how many runs a schedule
shows; ScheduleRun.objects.shown() tells them apart for retention.
"""

from django.db.models import QuerySet

from schedules.dispatch import jitter
from schedules.models import LAST_RUNS, Schedule, ScheduleRun

NEXT_RUNS = 10


def schedules_of(user) -> QuerySet[Schedule]:
    return Schedule.objects.filter(owner=user)


def next_runs(schedule: Schedule, count: int = NEXT_RUNS) -> list[dict]:
    """The next ticks that will fire, each with when its job may start (the tick + jitter)."""
    upcoming = schedule.next_runs(count + 1)
    return [
        {"fire_time": tick, "starts_at": tick + jitter(schedule, tick, after)}
        for tick, after in zip(upcoming, [*upcoming[1:], None], strict=False)
    ][:count]


def last_runs(schedule: Schedule, count: int = LAST_RUNS) -> list[ScheduleRun]:
    """The schedule's newest runs by fire time, with their jobs' status."""
    runs = ScheduleRun.objects.filter(schedule=schedule).select_related("job")
    return list(
        runs.only("fire_time", "kind", "skipped", "job__status").order_by("-fire_time")[:count]
    )
