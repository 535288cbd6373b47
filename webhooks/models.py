"""Where a user's events are sent, and the record of every delivery and attempt."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from events.models import TERMINAL_EVENT_TYPES


def default_event_types() -> list[str]:
    return [str(event_type) for event_type in TERMINAL_EVENT_TYPES]


class Endpoint(models.Model):
    """A URL that receives the owner's events, signed with the endpoint's secret.

    With a job, it is that job's one-off callback (the callback_url of its submission): it
    receives the job's terminal event only.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    event_types = models.JSONField(default=default_event_types)
    enabled = models.BooleanField(default=True)
    job = models.ForeignKey(
        "jobs.Job",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="callbacks",
        help_text="A one-off endpoint for this job's terminal event (its callback_url).",
    )
    # Standard Webhooks: "whsec_" and the base64 of 32 random bytes. After a rotation the
    # previous one signs too, until it expires.
    secret = models.CharField(max_length=64, editable=False)
    previous_secret = models.CharField(max_length=64, blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The endpoint receives the owner's events numbered after this one: none from before it.
    since_seq = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    # Health. A run of failures starts at failing_since; while it lasts, one delivery is tried
    # at a time, no sooner than retry_at. A day of it disables the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    # One worker at a time delivers to an endpoint, in order; its claim lapses at this time.
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="endpoint_owner_newest"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(previous_secret="") | Q(previous_secret_expires_at=None),
                name="endpoint_previous_secret_expires",
            ),
        ]

    def __str__(self) -> str:
        return self.url

    def signing_secrets(self, *, now) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and a rotated one."""
        secrets = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > now:
            secrets.append(self.previous_secret)
        return secrets


class Delivery(models.Model):
    """One event for one endpoint, until it is delivered or given up on.

    Its webhook_id is the same on every attempt, so a receiver can drop what it has seen.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Delivered"
        FAILED = "failed", "Given up"

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    event = models.ForeignKey("events.Event", on_delete=models.CASCADE, related_name="deliveries")
    webhook_id = models.CharField(max_length=40, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Also the index of an endpoint's deliveries.
            models.UniqueConstraint(fields=["endpoint", "event"], name="delivery_unique_event"),
        ]
        indexes = [
            # The due ones, in order: what an endpoint's worker sends next, and Beat's sweep.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} to {self.endpoint_id}: {self.status}"


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery, and what came back."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    # The endpoint's log, newest first.
    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    attempted_at = models.DateTimeField(default=timezone.now)
    # None when no answer came (refused, timed out, reset).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.TextField(blank=True, default="")
    error = models.CharField(max_length=200, blank=True, default="")
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-attempted_at"]
        indexes = [
            models.Index(fields=["endpoint", "-attempted_at"], name="attempt_endpoint_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.attempted_at}: {self.status_code or self.error}"
