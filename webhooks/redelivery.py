"""Sending a user's past events to an endpoint again, on the user's request."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from events.models import Event
from events.recording import number_events
from webhooks.delivery import kick
from webhooks.endpoints import lock_live_endpoint
from webhooks.models import Delivery, Endpoint
from webhooks.signing import new_webhook_id

# Events one request may send again; the answer says when it stopped short.
MAX_REDELIVERIES = 1_000


def endpoint_redeliver(
    *, endpoint: Endpoint, event_seq: int | None = None, since: datetime | None = None
) -> tuple[int, bool]:
    """Queue the event numbered `event_seq`, or every event since `since`, for the endpoint.

    Only events it subscribes to, and that are still kept. A delivery made before keeps its
    webhook-id and starts its retries afresh. Return (how many, whether more were left out).
    """
    number_events(endpoint.owner_id)  # The numbers the user knows, and the ones to come.
    events = Event.objects.filter(owner_id=endpoint.owner_id, type__in=endpoint.event_types)
    if endpoint.job_id is not None:
        events = events.filter(job_id=endpoint.job_id)
    if event_seq is not None:
        events = events.filter(seq=event_seq)
    if since is not None:
        events = events.filter(created_at__gte=since)
    chosen = list(events.order_by("seq").values_list("pk", flat=True)[: MAX_REDELIVERIES + 1])
    truncated = len(chosen) > MAX_REDELIVERIES
    chosen = chosen[:MAX_REDELIVERIES]
    now = timezone.now()
    with transaction.atomic():
        if not lock_live_endpoint(endpoint.pk):
            return 0, False  # Deleted meanwhile: there is nothing to send to.
        existing = Delivery.objects.filter(endpoint=endpoint, event_id__in=chosen)
        known = set(existing.values_list("event_id", flat=True))
        existing.update(status=Delivery.Status.PENDING, attempts=0, next_attempt_at=now)
        Delivery.objects.bulk_create(
            [
                Delivery(
                    endpoint=endpoint,
                    event_id=event_id,
                    webhook_id=new_webhook_id(),
                    next_attempt_at=now,
                )
                for event_id in chosen
                if event_id not in known
            ],
            ignore_conflicts=True,
        )
        transaction.on_commit(lambda: kick([endpoint.pk]))
    return len(chosen), truncated
