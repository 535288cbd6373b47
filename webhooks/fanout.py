"""Turning a user's new events into deliveries, one per event and endpoint that wants it."""

import logging

from django.db import IntegrityError, transaction

from events import recording
from events.models import Event, EventStream
from job_system.cache import cache_redis
from webhooks.endpoints import has_live_endpoints, unhook_owner
from webhooks.models import Delivery, Endpoint
from webhooks.signing import new_webhook_id

logger = logging.getLogger(__name__)

# Events read per transaction: a long backlog is fanned out in short transactions.
FAN_OUT_BATCH = 500
# A batch is made again when an endpoint it chose was deleted as it committed; each retry
# reads the endpoints again, so only a user deleting endpoints this fast runs out.
ENDPOINT_DELETED_RETRIES = 3


def webhooks_fan_out(*, owner_id: int) -> set:
    """Make deliveries of the owner's events that have none yet; return the endpoints' ids.

    The owner's stream row says how far the fan-out got, and moves in the transaction that
    makes the deliveries: a crash in between repeats a batch, never skips one, and the unique
    (endpoint, event) pair drops what a repeat makes twice.
    """
    # Cleared first: an event that commits while this runs starts another fan-out.
    cache_redis().delete(recording.FAN_OUT_KEY.format(owner=owner_id))
    recording.number_events(owner_id)
    endpoints_with_work: set = set()
    while True:
        batch = _fan_out_batch(owner_id)
        if batch is None:
            break
        events_read, endpoint_ids = batch
        endpoints_with_work.update(endpoint_ids)
        if events_read < FAN_OUT_BATCH:
            break
    if not endpoints_with_work and not has_live_endpoints(owner_id):
        unhook_owner(owner_id)
    return endpoints_with_work


def _fan_out_batch(owner_id: int) -> tuple[int, set] | None:
    """Fan out the owner's next batch of events: (events read, endpoints), or None if done."""
    for _ in range(ENDPOINT_DELETED_RETRIES):
        try:
            return _make_deliveries(owner_id)
        except IntegrityError:
            # An endpoint read here was deleted before this commit (its delete held the
            # commit back, then its deliveries had nothing to refer to): read them again.
            logger.info("fan-out of user %s raced an endpoint's deletion; again", owner_id)
    return _make_deliveries(owner_id)


def _make_deliveries(owner_id: int) -> tuple[int, set] | None:
    with transaction.atomic():
        stream = EventStream.objects.select_for_update().filter(owner_id=owner_id).first()
        if stream is None:
            return None
        unfanned = Event.objects.filter(owner_id=owner_id, seq__gt=stream.fanned_out_seq)
        events = list(unfanned.order_by("seq")[:FAN_OUT_BATCH])
        if not events:
            return None
        deliveries = _deliveries_for(owner_id, events)
        Delivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        stream.fanned_out_seq = events[-1].seq
        stream.save(update_fields=["fanned_out_seq"])
    return len(events), {delivery.endpoint_id for delivery in deliveries}


def _deliveries_for(owner_id: int, events: list[Event]) -> list[Delivery]:
    standing = list(Endpoint.objects.filter(owner_id=owner_id, job=None, enabled=True))
    finished_jobs = {event.job_id for event in events if event.is_terminal}
    callbacks: dict = {}
    if finished_jobs:
        for endpoint in Endpoint.objects.filter(job_id__in=finished_jobs, enabled=True):
            callbacks.setdefault(endpoint.job_id, []).append(endpoint)
    deliveries = []
    for event in events:
        for endpoint in [*standing, *callbacks.get(event.job_id, ())]:
            if event.seq > endpoint.since_seq and event.type in endpoint.event_types:
                deliveries.append(
                    Delivery(
                        endpoint=endpoint,
                        event=event,
                        webhook_id=new_webhook_id(),
                        next_attempt_at=event.created_at,
                    )
                )
    return deliveries
