"""The jobs a schedule shows among its last runs: what retention must keep."""

from datetime import UTC, datetime, timedelta

from jobs.models import Job
from schedules.models import ScheduleRun
from schedules.selectors import LAST_RUNS, last_runs, recent_run_job_ids

T = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


def add_runs(schedule, count: int, *, skipped_every: int = 0) -> list[ScheduleRun]:
    runs = []
    for number in range(count):
        skipped = bool(skipped_every) and number % skipped_every == 0
        job = None if skipped else Job.objects.create(owner=schedule.owner, name=f"run {number}")
        runs.append(
            ScheduleRun.objects.create(
                schedule=schedule,
                fire_time=T + timedelta(minutes=number),
                job=job,
                skipped=ScheduleRun.Skipped.OVERLAP if skipped else "",
            )
        )
    return runs


def test_recent_run_job_ids_are_the_jobs_each_schedule_shows(schedule_factory):
    busy, quiet = schedule_factory(), schedule_factory()
    add_runs(busy, LAST_RUNS + 5, skipped_every=4)
    add_runs(quiet, 3)

    shown = {run.job_id for schedule in (busy, quiet) for run in last_runs(schedule) if run.job_id}

    assert set(recent_run_job_ids()) == shown
    assert len(shown) == 8 + 3  # busy's newest 10 runs (5 to 14) hold 2 skipped ones.


def test_recent_run_job_ids_work_as_a_subquery(schedule_factory):
    schedule = schedule_factory()
    runs = add_runs(schedule, LAST_RUNS + 2)
    unscheduled = Job.objects.create(owner=schedule.owner, name="by hand")

    prunable = Job.objects.exclude(pk__in=recent_run_job_ids())

    assert set(prunable) == {runs[0].job, runs[1].job, unscheduled}
