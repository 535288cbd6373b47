"""Reads about schedules: a user's own, a schedule's latest runs, and the jobs they show.

The owner filter is written once, in schedules_of(). LAST_RUNS is how many runs a schedule
shows; recent_run_job_ids() is the same set, for retention to keep those jobs.
"""

from django.db.models import F, QuerySet, Window
from django.db.models.functions import RowNumber

from schedules.dispatch import jitter
from schedules.models import Schedule, ScheduleRun

LAST_RUNS = 10
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


def recent_run_job_ids(count: int = LAST_RUNS) -> QuerySet:
    """The ids of every job that some schedule shows among its last runs (last_runs()).

    A flat values_list, usable as a subquery: `Job.objects.exclude(pk__in=recent_run_job_ids())`.
    Skipped runs count among the last ones, as they are shown, but have no job.
    """
    ranked = ScheduleRun.objects.annotate(
        newest=Window(RowNumber(), partition_by=F("schedule_id"), order_by=F("fire_time").desc())
    )
    # Ranked over all runs first: a job filter beside the rank would rank only runs with jobs.
    shown = ranked.filter(newest__lte=count).values("pk")
    runs = ScheduleRun.objects.filter(pk__in=shown, job__isnull=False)
    return runs.values_list("job_id", flat=True)
