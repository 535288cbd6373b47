"""Reads about jobs that take more than a queryset: why a pending job waits."""

from django.utils import timezone

from jobs.models import Job, WaitingFor
from jobs.services.admission import Occupancy, user_limit


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
