"""Thin Celery entry points of schedules; Beat runs them on `housekeeping`."""

from celery import shared_task

from schedules.dispatch import schedules_dispatch_due
from schedules.retention import schedule_runs_prune


@shared_task(name="schedules.tasks.dispatch_due_schedules", ignore_result=True)
def dispatch_due_schedules() -> int:
    return schedules_dispatch_due()


@shared_task(name="schedules.tasks.prune_schedule_runs", ignore_result=True)
def prune_schedule_runs() -> int:
    return schedule_runs_prune()
