"""Retention keeps the jobs a schedule shows among its last runs, and the runs of the rest."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from jobs.models import Job
from jobs.services.pruning import jobs_prune_expired
from jobs.tests.test_runs import run
from schedules.models import LAST_RUNS, Schedule, ScheduleRun
from schedules.selectors import last_runs

pytestmark = pytest.mark.django_db

HI = {"message": "hi", "data": None}


def add_runs(schedule, count: int, *, skipped_every: int = 0) -> list[ScheduleRun]:
    """`count` runs a minute apart, oldest first, each with a completed job unless skipped."""
    start = timezone.now() - timedelta(days=1)
    runs = []
    for number in range(count):
        skipped = bool(skipped_every) and number % skipped_every == 0
        job = None
        if not skipped:
            job = run(Job.objects.create(owner=schedule.owner, name=f"run {number}", parameters=HI))
        runs.append(
            ScheduleRun.objects.create(
                schedule=schedule,
                fire_time=start + timedelta(minutes=number),
                job=job,
                skipped=ScheduleRun.Skipped.OVERLAP if skipped else "",
            )
        )
    Schedule.objects.filter(pk=schedule.pk).update(latest_job=runs[-1].job)
    return runs


def prune_a_year_later() -> dict[str, int]:
    with time_machine.travel(timezone.now() + timedelta(days=365), tick=False):
        return jobs_prune_expired()


def test_the_jobs_a_schedule_shows_are_kept_and_the_older_ones_pruned(schedule_factory):
    busy, quiet = schedule_factory(), schedule_factory()
    busy_runs = add_runs(busy, LAST_RUNS + 5, skipped_every=4)
    add_runs(quiet, 3)
    by_hand = run(Job.objects.create(owner=busy.owner, name="by hand", parameters=HI))
    shown = {r.job_id for s in (busy, quiet) for r in last_runs(s) if r.job_id}

    assert prune_a_year_later()["deleted"] == 4  # busy's runs 1, 2, 3 and the job by hand.

    assert set(Job.objects.values_list("pk", flat=True)) == shown
    assert len(shown) == 8 + 3  # busy's newest 10 runs (5 to 14) hold 2 skipped ones.
    assert not Job.objects.filter(pk=by_hand.pk).exists()
    # The pruned jobs' runs stay, without their jobs, until the runs' own retention
    # (test_run_retention).
    assert ScheduleRun.objects.filter(schedule=busy).count() == LAST_RUNS + 5
    assert ScheduleRun.objects.filter(pk__in=[r.pk for r in busy_runs[1:4]], job=None).count() == 3


def test_a_schedule_s_latest_job_may_go_once_it_is_no_longer_shown(schedule_factory):
    schedule = schedule_factory()
    runs = add_runs(schedule, 2)
    Schedule.objects.filter(pk=schedule.pk).update(latest_job=runs[0].job)
    # Its run is pushed out of the last ones by newer runs that made no job.
    for minute in range(LAST_RUNS):
        ScheduleRun.objects.create(
            schedule=schedule,
            fire_time=runs[-1].fire_time + timedelta(minutes=minute + 1),
            skipped=ScheduleRun.Skipped.OVERLAP,
        )

    assert prune_a_year_later()["deleted"] == 2

    schedule.refresh_from_db()
    assert schedule.latest_job is None
