import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Count, Q
from django.utils import timezone

DEFAULT_PRIORITY = 5


class WaitingFor(models.TextChoices):
    """Why a pending job has not started (jobs.selectors works it out for the API)."""

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


class JobQuerySet(models.QuerySet["Job"]):
    def owned_by(self, user) -> "JobQuerySet":
        return self.filter(owner=user)

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(Job.Status.values, 0)
        for row in self.order_by().values("status").annotate(count=Count("pk")):
            counts[row["status"]] = row["count"]
        return {"total": sum(counts.values()), **counts}


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = (Status.PENDING, Status.IN_PROGRESS)
    FINISHED_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the (owner, ...) indexes below serve every lookup by owner, and each
    # index is one more write on every claim and completion.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    job_type = models.CharField(max_length=64, default="echo")
    # The broker queue of the job's type when it was submitted: admission fills each queue's
    # window from its own waiting jobs.
    queue = models.CharField(max_length=64, default="default", editable=False)
    priority = models.PositiveSmallIntegerField(
        default=DEFAULT_PRIORITY,
        validators=[MaxValueValidator(9)],
        help_text="0-9: among one owner's waiting jobs, higher ones start first.",
    )
    parameters = models.JSONField(default=dict, blank=True)
    scheduled_time = models.DateTimeField(
        null=True, blank=True, help_text="Do not start before this time; empty means now."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    # Attempts are numbered for the life of the job. A manual retry starts a new run, and
    # max_retries limits the retries within one run.
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts in every run so far; the latest one's number."
    )
    run = models.PositiveIntegerField(
        default=1, help_text="1, and one more for each manual retry of the job."
    )
    run_attempts = models.PositiveIntegerField(
        default=0,
        help_text="Attempts of this run that count against max_retries (an attempt handed "
        "back by a worker that was shutting down does not).",
    )
    max_retries = models.PositiveSmallIntegerField(default=3)
    timeout_seconds = models.PositiveIntegerField(
        default=300, help_text="An attempt running longer than this is stopped and fails."
    )
    error_message = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Stamped by the transition that finishes the job (jobs.retention), cleared by a rerun.
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the finished job may be deleted with its result, attempts and events.",
    )

    # Bookkeeping for workers and Beat; clients never write these.
    run_after = models.DateTimeField(
        default=timezone.now,
        help_text="The earliest time the next attempt may start: the scheduled time, or a "
        "retry's backoff.",
    )
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When a message for the next attempt was published."
    )
    dispatch_token = models.UUIDField(null=True, blank=True, editable=False)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")
    # A client's Idempotency-Key, and a fingerprint of the request that used it first
    # (jobs.idempotency). Every job of a bulk request carries its key, each at its position.
    idempotency_key = models.CharField(max_length=255, blank=True, default="", editable=False)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="", editable=False)
    batch_position = models.PositiveSmallIntegerField(
        default=0,
        editable=False,
        help_text="The job's place in the bulk request that made it; 0 for a single one.",
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The admin's unfiltered list, newest first, across all owners.
            models.Index(fields=["-created_at"], name="job_newest"),
            models.Index(fields=["owner", "-created_at"], name="job_owner_newest"),
            models.Index(fields=["owner", "status", "-created_at"], name="job_owner_status"),
            models.Index(fields=["owner", "job_type", "-created_at"], name="job_owner_type"),
            # Pending jobs in two partial indexes, by whether they were admitted (given a
            # message). Admission walks the waiting ones queue by queue, owner by owner, each
            # owner's by priority; the reaper and admission's window count scan the admitted
            # ones. Neither condition follows from a claim's `id = … AND status = 'pending'
            # AND run_after <= now AND enqueued_at IS NOT NULL` (hence `claim_token IS NULL`,
            # true of every pending job), so a claim always finds its row by primary key: one
            # index on all pending jobs matched that WHERE clause, and with statistics from a
            # quiet hour the planner chose it and scanned the whole backlog per claim.
            models.Index(
                fields=["queue", "owner", "-priority", "run_after"],
                name="job_awaiting_admission",
                condition=Q(status="pending", enqueued_at=None),
            ),
            # Beat's dispatcher admits the jobs that fall due within the look-ahead by this.
            models.Index(
                fields=["run_after"],
                name="job_awaiting_dispatch",
                condition=Q(status="pending", enqueued_at=None),
            ),
            models.Index(
                fields=["enqueued_at"],
                name="job_admitted",
                condition=Q(status="pending", enqueued_at__isnull=False, claim_token=None),
            ),
            # Running jobs by lease, for the reaper. The lease condition, like the two above,
            # keeps fenced updates (`id = … AND status = 'in_progress' AND claim_token = …`)
            # on the primary key.
            models.Index(
                fields=["lease_expires_at"],
                name="job_running_lease",
                condition=Q(status="in_progress", lease_expires_at__isnull=False),
            ),
            # The pruner deletes the expired jobs, soonest first (jobs.services.pruning).
            models.Index(
                fields=["expires_at"], name="job_expiring", condition=Q(expires_at__isnull=False)
            ),
            # Finished jobs from before retention, which the pruner gives an expires_at. Empty
            # once it has: every job finished since has one.
            models.Index(
                fields=["completed_at"],
                name="job_finished_unstamped",
                condition=Q(expires_at=None, status__in=["completed", "failed", "cancelled"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0, progress__lte=100), name="job_progress_0_100"
            ),
            # Every running job holds a lease, so job_running_lease has every running job.
            models.CheckConstraint(
                condition=~Q(status="in_progress") | Q(lease_expires_at__isnull=False),
                name="job_running_has_lease",
            ),
            # One request per key: a second single job, or a second batch, with a key that
            # was used meets its first job at position 0.
            models.UniqueConstraint(
                fields=["owner", "idempotency_key", "batch_position"],
                condition=~Q(idempotency_key=""),
                name="job_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.job_type}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES

    @property
    def attempt_history(self) -> list["JobAttempt"]:
        """Every attempt, oldest first: the finished ones, then the one running now, if any.

        A running attempt has no row yet (it is written when the attempt ends); its details
        are on the job itself.
        """
        attempts = list(self.attempt_log.all())
        if self.status == self.Status.IN_PROGRESS and self.claim_token:
            attempts.append(
                JobAttempt(
                    job=self,
                    number=self.attempts,
                    run=self.run,
                    claim_token=self.claim_token,
                    worker=self.worker,
                    started_at=self.started_at,
                )
            )
        return attempts


class JobAttempt(models.Model):
    """One attempt at a job by a worker, from claim to outcome."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        LOST = "lost", "Worker lost"
        CANCELLED = "cancelled", "Cancelled"
        HANDED_BACK = "handed_back", "Handed back at worker shutdown"
        SUPERSEDED = "superseded", "Superseded by another claim"

    # No index of its own: attempt_unique_number leads with the job.
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    number = models.PositiveIntegerField(help_text="1, 2, 3, ... over the life of the job.")
    run = models.PositiveIntegerField(default=1, help_text="The job's run this attempt was in.")
    claim_token = models.UUIDField(unique=True, editable=False)
    worker = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error_message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["number"]
        constraints = [
            # Also the index a job's attempts are read through, in order.
            models.UniqueConstraint(fields=["job", "number"], name="attempt_unique_number")
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.job_id}: {self.outcome}"


class JobResultQuerySet(models.QuerySet["JobResult"]):
    def owned_by(self, user) -> "JobResultQuerySet":
        return self.filter(job__owner=user)


class JobResult(models.Model):
    """The output of a completed job; written in the transaction that completes it."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="result")
    output = models.JSONField(default=dict)
    # Kept so that a list can choose its page by size before it loads any output.
    output_bytes = models.PositiveIntegerField(
        default=0, help_text="The output's size as compact UTF-8 JSON, in bytes."
    )
    completed_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)

    objects = JobResultQuerySet.as_manager()

    class Meta:
        ordering = ["-completed_at"]

    def __str__(self) -> str:
        return f"Result of {self.job_id}"


class FairShare(models.Model):
    """An owner's place in the fair order of one queue (jobs.services.admission)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    queue = models.CharField(max_length=64)
    # The virtual finish time of the owner's latest admitted job: each job admitted adds
    # 1/fair_share_weight.
    finish = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "queue"], name="fair_share_unique_owner_queue")
        ]

    def __str__(self) -> str:
        return f"{self.owner_id} in {self.queue}: {self.finish}"


class QueueClock(models.Model):
    """A queue's virtual time: the start time of the last job admitted to it."""

    queue = models.CharField(max_length=64, primary_key=True)
    virtual_time = models.FloatField(default=0)

    def __str__(self) -> str:
        return f"{self.queue}: {self.virtual_time}"
