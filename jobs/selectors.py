"""Reads about jobs that take more than a queryset: why a pending job waits."""

from django.db import models
from django.utils import timezone

from jobs.models import Job
from jobs.services.admission import Occupancy, user_limit


class WaitingFor(models.TextChoices):
    SCHEDULED_TIME = "scheduled_time", "Its scheduled time has not come"
    RETRY_BACKOFF = "retry_backoff", "It waits out the backoff before its next attempt"
    USER_CONCURRENCY_LIMIT = (
        "user_concurrency_limit",
        "Its owner has as many jobs running as the owner's limit allows",
    )
    TYPE_CONCURRENCY_LIMIT = (
        "type_concurrency_limit",
        "As many jobs of its type run as the type's limit allows",
    )
    WORKER = "worker", "It waits for a free worker process, in its turn"


class WaitingReasons:
    """Say why pending jobs wait; the running jobs are counted once, and only if needed.

    One per response, so a page of jobs costs at most one more query.
    """

    def __init__(self) -> None:
        self._occupancy: Occupancy | None = None

    def reason(self, job: Job, *, owner) -> WaitingFor | None:
        """Why `job` (of `owner`) waits: None unless it is pending."""
        if job.status != Job.Status.PENDING:
            return None
        if job.run_after > timezone.now():
            # An attempt has counted in this run: the next one waits out its backoff.
            return WaitingFor.RETRY_BACKOFF if job.run_attempts else WaitingFor.SCHEDULED_TIME
        if job.enqueued_at is None:
            occupancy = self._occupancy_now()
            limit = user_limit(owner)
            if limit and occupancy.by_owner[job.owner_id] >= limit:
                return WaitingFor.USER_CONCURRENCY_LIMIT
            if occupancy.type_full(job.job_type):
                return WaitingFor.TYPE_CONCURRENCY_LIMIT
        return WaitingFor.WORKER

    def _occupancy_now(self) -> Occupancy:
        if self._occupancy is None:
            self._occupancy = Occupancy.load(now=timezone.now())
        return self._occupancy
