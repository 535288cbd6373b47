"""Celery entry points. They take ids and call services; the logic lives in services/."""

import uuid

from celery import shared_task
from celery.signals import worker_process_init, worker_shutting_down
from django.conf import settings

from jobs import services
from jobs.services import leases


@shared_task(name="jobs.tasks.run_job", bind=True)
def run_job(self, job_id: str) -> None:
    services.job_run(job_id=uuid.UUID(job_id), worker=self.request.hostname or "")
    # The queues hold only a window of messages: refill them as they drain.
    services.jobs_admit_if_waiting()


@shared_task(name="jobs.tasks.run_jobs", bind=True)
def run_jobs(self, job_ids: list[str]) -> None:
    services.jobs_run_in_turn(
        job_ids=[uuid.UUID(job_id) for job_id in job_ids], worker=self.request.hostname or ""
    )
    services.jobs_admit_if_waiting()


@shared_task(name="jobs.tasks.dispatch_due_jobs")
def dispatch_due_jobs() -> int:
    return services.jobs_dispatch_due()


@shared_task(name="jobs.tasks.reap_stale_jobs")
def reap_stale_jobs() -> dict[str, int]:
    return services.jobs_reap_stale()


@shared_task(name="jobs.tasks.prune_expired_jobs")
def prune_expired_jobs() -> dict[str, int]:
    return services.jobs_prune_expired(
        pause_ratio=settings.JOB_PRUNE_PAUSE_RATIO, max_seconds=settings.JOB_PRUNE_RUN_SECONDS
    )


@worker_shutting_down.connect
def hand_back_running_jobs(sender: str, **kwargs) -> None:
    """On a warm shutdown, let running jobs finish for a while, then hand the rest back."""
    services.jobs_hand_back(worker=sender, grace_seconds=settings.WORKER_SHUTDOWN_GRACE_SECONDS)


@worker_process_init.connect
def let_the_watchdog_end_this_process(**kwargs) -> None:
    """A prefork pool process, which the pool replaces if it ends: a handler that will not
    stop when told to may be stopped by ending it."""
    leases.allow_ending_process()
