"""Schedule runs go with their jobs: a run whose job was pruned, or an old skipped one."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import Job
from jobs.tests.test_runs import run
from schedules.models import LAST_RUNS, ScheduleRun
from schedules.retention import schedule_runs_prune

pytestmark = pytest.mark.django_db

HI = {"message": "hi", "data": None}


def add_run(schedule, fire_time, *, job: bool = False, skipped: bool = False) -> ScheduleRun:
    made = None
    if job:
        made = run(Job.objects.create(owner=schedule.owner, name="tick", parameters=HI))
    return ScheduleRun.objects.create(
        schedule=schedule,
        fire_time=fire_time,
        job=made,
        skipped=ScheduleRun.Skipped.OVERLAP if skipped else "",
    )


def kept(schedule) -> set:
    return set(ScheduleRun.objects.filter(schedule=schedule).values_list("fire_time", flat=True))


def test_runs_whose_job_is_gone_go_and_the_last_ones_stay(schedule_factory):
    schedule = schedule_factory()
    start = timezone.now() - timedelta(days=3)
    # 15 runs a minute apart whose jobs the pruner deleted, then one with its job.
    pruned = [add_run(schedule, start + timedelta(minutes=n)) for n in range(15)]
    with_job = add_run(schedule, start + timedelta(minutes=15), job=True)

    assert schedule_runs_prune() == 6

    newest = {r.fire_time for r in pruned[-(LAST_RUNS - 1) :]} | {with_job.fire_time}
    assert kept(schedule) == newest


def test_a_run_with_its_job_stays_whatever_its_age(schedule_factory):
    schedule = schedule_factory()
    start = timezone.now() - timedelta(days=400)
    old = [add_run(schedule, start + timedelta(minutes=n), job=True) for n in range(LAST_RUNS)]
    for n in range(LAST_RUNS):
        add_run(schedule, timezone.now() - timedelta(days=2, minutes=n))

    assert schedule_runs_prune() == 0
    assert kept(schedule) >= {r.fire_time for r in old}


def test_skipped_runs_stay_as_long_as_a_failed_job(schedule_factory):
    schedule = schedule_factory()
    days = settings.JOB_RETENTION_FAILED_DAYS
    now = timezone.now()
    outlived = add_run(schedule, now - timedelta(days=days + 1), skipped=True)
    within = add_run(schedule, now - timedelta(days=days - 1), skipped=True)
    for n in range(LAST_RUNS):  # Newer runs, so the two are not among the last ones.
        add_run(schedule, now - timedelta(hours=n), job=True)

    assert schedule_runs_prune() == 1
    assert within.fire_time in kept(schedule)
    assert outlived.fire_time not in kept(schedule)


def test_runs_of_the_last_day_stay(schedule_factory):
    schedule = schedule_factory()
    now = timezone.now()
    recent = [add_run(schedule, now - timedelta(minutes=n)) for n in range(LAST_RUNS + 5)]

    assert schedule_runs_prune() == 0
    assert kept(schedule) == {r.fire_time for r in recent}
