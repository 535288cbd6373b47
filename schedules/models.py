"""Users' recurring schedules, and a row for every tick that fired.

The run table, not columns on Job, records which job each tick made: its unique constraint on
(schedule, fire_time) is what makes a tick fire at most once, and it outlives a job that
retention deletes, so a pruned job's tick is never fired again. Job stays as it was.
"""

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from jobs.models import DEFAULT_PRIORITY, Job
from schedules.ticks import Timing


class OverlapPolicy(models.TextChoices):
    SKIP = "skip", "Skip a tick while the previous run is pending or running"
    BUFFER_ONE = "buffer_one", "Keep one tick to run when the previous run finishes"
    ALLOW = "allow", "Run every tick, whatever the previous run does"


class CatchupPolicy(models.TextChoices):
    SKIP = "skip", "Run none of the ticks missed while the service was down"
    LATEST = "latest", "Run the latest missed tick once"
    ALL = "all", "Run the missed ticks within the catch-up window, up to the limit"


class Schedule(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: schedule_owner_newest leads with it.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="schedules",
        db_index=False,
    )
    name = models.CharField(max_length=200)
    cron = models.CharField(max_length=200, blank=True, default="")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)

    # The job each tick makes.
    job_type = models.CharField(max_length=64, default="echo")
    parameters = models.JSONField(default=dict, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    max_retries = models.PositiveSmallIntegerField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(default=DEFAULT_PRIORITY)

    overlap_policy = models.CharField(
        max_length=16, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP
    )
    catchup_policy = models.CharField(
        max_length=16, choices=CatchupPolicy.choices, default=CatchupPolicy.SKIP
    )
    catchup_window_seconds = models.PositiveIntegerField(default=60 * 60)
    jitter_seconds = models.PositiveIntegerField(default=0)

    # Bookkeeping for the dispatcher; clients never write these.
    next_fire_at = models.DateTimeField(
        null=True, blank=True, help_text="The next tick; empty once the schedule has ended."
    )
    # A tick held back by the buffer_one overlap policy until the latest run finishes.
    buffered_fire_at = models.DateTimeField(null=True, blank=True)
    latest_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="schedule_owner_newest"),
            # The dispatcher reads only the due schedules, by this: its cost follows them, not
            # the table.
            models.Index(
                fields=["next_fire_at"],
                name="schedule_due",
                condition=Q(enabled=True, next_fire_at__isnull=False),
            ),
            models.Index(
                fields=["buffered_fire_at"],
                name="schedule_buffered",
                condition=Q(buffered_fire_at__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__isnull=False))
                | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="schedule_cron_or_interval",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron or f'every {self.interval_seconds}s'})"

    def timing(self) -> Timing:
        return Timing(
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            time_zone=self.time_zone,
            start_at=self.start_at,
            end_at=self.end_at,
        )

    def next_runs(self, count: int) -> list[datetime]:
        """The next `count` ticks the dispatcher will fire, from next_fire_at on."""
        if not self.enabled or self.next_fire_at is None:
            return []
        return self.timing().next_ticks(self.next_fire_at, count, inclusive=True)


# How many of its newest runs a schedule shows (API and admin); retention keeps their jobs.
LAST_RUNS = 10


class ScheduleRunQuerySet(models.QuerySet):
    def shown(self, shown: bool = True) -> "ScheduleRunQuerySet":
        """These runs, of those their schedule shows among its last LAST_RUNS (shown=False:
        of those it no longer shows). Both retentions ask it: the jobs' pruner keeps the jobs
        of shown runs, the runs' pruner deletes only runs not shown.

        Shown means fewer than LAST_RUNS newer runs of the same schedule: the LAST_RUNS-th
        newer one does not exist. Asked per run through the (schedule, fire_time) index, so it
        costs the runs asked about, not the whole table.
        """
        newer = ScheduleRun.objects.filter(
            schedule=OuterRef("schedule"), fire_time__gt=OuterRef("fire_time")
        ).order_by("-fire_time")
        return self.annotate(
            nth_newer=Subquery(newer.values("pk")[LAST_RUNS - 1 : LAST_RUNS])
        ).filter(nth_newer__isnull=shown)


class ScheduleRun(models.Model):
    """One tick of a schedule that fired (or was skipped), and the job it made."""

    class Kind(models.TextChoices):
        TICK = "tick", "A tick, on time"
        CATCH_UP = "catch_up", "A tick missed while the service was down"
        BUFFERED = "buffered", "A tick held back until the previous run finished"
        TRIGGER = "trigger", "Run now, on request"

    class Skipped(models.TextChoices):
        NOT = "", "Not skipped"
        OVERLAP = "overlap", "The previous run was still pending or running"
        ACTIVE_JOB_CAP = "active_job_cap", "The owner had as many active jobs as one may"
        UNKNOWN_JOB_TYPE = "unknown_job_type", "The job type no longer exists"

    id = models.BigAutoField(primary_key=True)
    schedule = models.ForeignKey(
        Schedule, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    fire_time = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TICK)
    # Null when the tick was skipped, or once retention has deleted the job.
    job = models.OneToOneField(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_run"
    )
    skipped = models.CharField(max_length=16, choices=Skipped.choices, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScheduleRunQuerySet.as_manager()

    class Meta:
        ordering = ["-fire_time"]
        constraints = [
            # Exactly once per tick, whatever dispatchers race or crash; also the index a
            # schedule's latest runs are read through.
            models.UniqueConstraint(fields=["schedule", "fire_time"], name="schedule_run_once"),
        ]
        indexes = [
            # The runs retention may delete (schedules.retention): those without a job.
            models.Index(fields=["fire_time"], name="schedule_run_unlinked", condition=Q(job=None)),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.fire_time}: {self.job_id or self.skipped}"

    @property
    def status(self) -> str:
        """The job's status; `skipped` if the tick made no job, `deleted` if its job is gone."""
        if self.skipped:
            return "skipped"
        return self.job.status if self.job_id else "deleted"
