"""Thin Celery entry points of schedules; Beat runs the dispatcher on `housekeeping`."""

from celery import shared_task

from schedules.dispatch import schedules_dispatch_due


@shared_task(name="schedules.tasks.dispatch_due_schedules", ignore_result=True)
def dispatch_due_schedules() -> int:
    return schedules_dispatch_due()
