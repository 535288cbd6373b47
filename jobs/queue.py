"""Publishing job ids to the broker.

A message only says "job X may be due"; the worker's claim decides. So a publish that fails is
not fatal: the job goes back to Beat's dispatcher, and a duplicate message is a no-op.
"""

import logging
import uuid
from collections.abc import Iterable
from functools import partial

from django.db import transaction

from job_system.celery import app as celery_app
from jobs import handlers
from jobs.models import Job

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "jobs.tasks.run_job"


def queue_for(job_type: str) -> str:
    try:
        return handlers.get(job_type).queue
    except KeyError:
        return celery_app.conf.task_default_queue


def publish_on_commit(jobs: Iterable[tuple[uuid.UUID, str]]) -> None:
    """Publish (job id, job type) pairs once the surrounding transaction commits."""
    jobs = list(jobs)
    if jobs:
        transaction.on_commit(partial(publish, jobs))


def publish(jobs: list[tuple[uuid.UUID, str]]) -> None:
    try:
        with celery_app.producer_or_acquire() as producer:
            for job_id, job_type in jobs:
                celery_app.send_task(
                    RUN_JOB_TASK,
                    args=[str(job_id)],
                    queue=queue_for(job_type),
                    producer=producer,
                )
    except Exception:
        # The rows are committed, so the client must not see an error. Hand the jobs back to
        # the dispatcher, which publishes them again within a second once the broker is back.
        logger.exception("publishing %d job(s) failed; the dispatcher will retry", len(jobs))
        _forget_enqueued([job_id for job_id, _ in jobs])


def _forget_enqueued(job_ids: list[uuid.UUID]) -> None:
    try:
        Job.objects.filter(pk__in=job_ids, status=Job.Status.PENDING).update(enqueued_at=None)
    except Exception:
        # Even if this write fails the reaper republishes them after JOB_REDISPATCH_AFTER.
        logger.exception("could not hand %d job(s) back to the dispatcher", len(job_ids))
