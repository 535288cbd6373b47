"""The outbox: every change of a job's status, told in the transaction that made it."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class EventType(models.TextChoices):
    PENDING = "job.pending", "Created, or queued again for a retry"
    STARTED = "job.started", "A worker started an attempt"
    PROGRESS = "job.progress", "The running attempt reported progress"
    COMPLETED = "job.completed", "Completed; the result is ready"
    FAILED = "job.failed", "Failed for good"
    CANCELLED = "job.cancelled", "Cancelled"


TERMINAL_EVENT_TYPES = (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


class EventStream(models.Model):
    """One user's sequence of events: the last number given, and what retention deleted.

    Events are numbered after they commit, by events.recording.number_events, one numbering
    of a user's events at a time: so a reader that saw event n has seen every event before
    it, and resuming after n leaves no gap.
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="event_stream",
    )
    last_seq = models.BigIntegerField(default=0)
    # Events numbered up to this one were deleted: a client resuming before it missed some.
    pruned_through = models.BigIntegerField(default=0)
    # Webhooks: the events up to this one have their deliveries (webhooks.fan_out).
    fanned_out_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"Events of {self.owner_id}: {self.last_seq}"


class Event(models.Model):
    """A change of one job, as it was when it happened."""

    # Global, for the admin and retention; clients see `seq`, which counts per user.
    id = models.BigAutoField(primary_key=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # None until the event is numbered, after its commit (events.recording.number_events).
    seq = models.BigIntegerField(
        null=True, blank=True, help_text="1, 2, 3, ... over the owner's events."
    )
    type = models.CharField(max_length=32, choices=EventType.choices)
    # No index of its own: event_job_seq leads with the job.
    job = models.ForeignKey(
        "jobs.Job", on_delete=models.CASCADE, related_name="events", db_index=False
    )
    status = models.CharField(max_length=16)
    attempt = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    waiting_for = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["owner", "seq"]
        constraints = [
            # Also the index a stream reads through: an owner's events after a number. Partial,
            # so that storing an event (unnumbered) costs this index nothing: its entry is
            # made by the numbering, which only users with a reader pay for.
            models.UniqueConstraint(
                fields=["owner", "seq"],
                name="event_unique_owner_seq",
                condition=Q(seq__isnull=False),
            ),
        ]
        indexes = [
            # A stream filtered to one job, and deleting a job with its events.
            models.Index(fields=["job", "seq"], name="event_job_seq"),
            # The owner's events still to be numbered, in the order they were stored.
            models.Index(fields=["owner", "id"], name="event_unnumbered", condition=Q(seq=None)),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq} of {self.job_id}"

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES
