"""Validation of webhook endpoints as clients send them, and what they get back.

The secret is shown once: in the answer that creates an endpoint, and in the one that
rotates it. Other answers never carry it.
"""

from typing import Any

from rest_framework import serializers

from events.models import EventType
from job_system.serializers import FieldsBuiltOnceMixin, StrictTypesMixin
from webhooks import transport
from webhooks.models import DeliveryAttempt, Endpoint


def validate_webhook_url(url: str) -> None:
    """Refuse a URL that could never be delivered to: scheme, port, or a private address."""
    try:
        transport.check_url(url)
    except transport.Refused as exc:
        raise serializers.ValidationError(exc.reason, code="url_not_allowed") from exc


class WebhookUrlField(serializers.URLField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2000, validators=[validate_webhook_url], **kwargs)


class EndpointSerializer(FieldsBuiltOnceMixin, StrictTypesMixin, serializers.ModelSerializer):
    url = WebhookUrlField(help_text="Where to POST events: http(s), on a public address.")
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices),
        allow_empty=False,
        min_length=1,
        max_length=len(EventType.choices),
        required=False,
        help_text="The event types to send; default: the terminal ones (job.completed, "
        "job.failed, job.cancelled).",
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False,
        help_text="Set false to stop deliveries (they wait); true again resumes them, also "
        "after the endpoint was disabled for failing.",
    )

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "job",
            "created_at",
            "updated_at",
            "failing_since",
            "consecutive_failures",
            "disabled_at",
            "disabled_reason",
        ]
        read_only_fields = [
            "id",
            "job",
            "created_at",
            "updated_at",
            "failing_since",
            "consecutive_failures",
            "disabled_at",
            "disabled_reason",
        ]
        extra_kwargs = {
            "job": {"help_text": "Set on a job's one-off callback endpoint (its callback_url)."},
            "failing_since": {"help_text": "When the current run of failed deliveries began."},
            "disabled_reason": {"help_text": "Why the service disabled the endpoint, if it did."},
        }

    def validate_event_types(self, value: list[str]) -> list[str]:
        # In the order of EventType, once each: what a client sent twice means the same.
        return [event_type for event_type in EventType.values if event_type in value]


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="Signs every delivery (Standard Webhooks). Shown only now: store it.",
    )
    previous_secret_expires_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="After a rotation, deliveries carry the old secret's signature too until then.",
    )

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret", "previous_secret_expires_at"]


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    webhook_id = serializers.CharField(source="delivery.webhook_id", read_only=True)
    event_id = serializers.IntegerField(
        source="delivery.event.seq", read_only=True, help_text="The event's `id`."
    )
    event_type = serializers.ChoiceField(
        source="delivery.event.type", choices=EventType.choices, read_only=True
    )
    job = serializers.UUIDField(source="delivery.event.job_id", read_only=True)
    delivery_status = serializers.CharField(
        source="delivery.status",
        read_only=True,
        help_text="The delivery's state now: pending (will be tried again), succeeded, or "
        "failed (given up).",
    )

    class Meta:
        model = DeliveryAttempt
        fields = [
            "id",
            "webhook_id",
            "event_id",
            "event_type",
            "job",
            "attempted_at",
            "succeeded",
            "status_code",
            "latency_ms",
            "response_excerpt",
            "error",
            "delivery_status",
        ]
        read_only_fields = fields


class RedeliverSerializer(StrictTypesMixin, serializers.Serializer):
    event_id = serializers.IntegerField(
        required=False, min_value=1, help_text="Send this event again (its `id`)."
    )
    since = serializers.DateTimeField(
        required=False, help_text="Send every event since this time again (ISO 8601)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("event_id" in attrs) == ("since" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give either event_id or since."]}, code="invalid"
            )
        return attrs


class RedeliveredSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="Events queued for delivery again.")
    truncated = serializers.BooleanField(
        help_text="True if more events matched than one request sends: ask again with a "
        "later `since`."
    )
