"""Deleting events past EVENT_RETENTION_DAYS, with their webhook deliveries and callbacks."""

import uuid
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, Case, Max, QuerySet, When
from django.db.models.functions import Greatest
from django.utils import timezone

from events.models import Event, EventStream
from events.recording import number_events
from job_system.deletion import delete_in_batches
from webhooks.models import Delivery, DeliveryAttempt, Endpoint

# Events deleted per transaction: short ones, which never hold a user's stream for long.
PURGE_BATCH = 5_000


def events_purge_expired() -> int:
    """Delete the events older than the retention period, oldest first; return how many."""
    cutoff = timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS)
    total = 0
    while True:
        with transaction.atomic():
            # The oldest by id, through the primary key: ids grow with time, so an index on
            # created_at would cost every stored event an entry only to serve this hourly
            # task. An event stored a moment out of order waits for the next run.
            oldest = Event.objects.order_by("pk").values_list("pk", "created_at")[:PURGE_BATCH]
            batch = [pk for pk, created_at in oldest if created_at < cutoff]
            if not batch:
                return total
            events_mark_pruned(Event.objects.filter(pk__in=batch))
            events_delete(event_ids=batch, batch_size=PURGE_BATCH)
        total += len(batch)
        if len(batch) < PURGE_BATCH:
            return total


def events_mark_pruned(events: QuerySet[Event]) -> None:
    """Tell the owners' streams that `events` are deleted, before they are.

    Each stream remembers the last number deleted, so that a client resuming from before it
    is told that it missed events. Events without a number yet are numbered first. Told
    early, a client only resumes from a later point than it had to; told late, it would miss
    events without knowing.
    """
    for owner_id in sorted(set(events.filter(seq=None).values_list("owner_id", flat=True))):
        while events.filter(owner_id=owner_id, seq=None).exists():
            number_events(owner_id)
    last_deleted = {
        owner_id: last
        for owner_id, last in events.order_by()
        .values("owner_id")
        .annotate(last=Max("seq"))
        .values_list("owner_id", "last")
        if last is not None
    }
    if not last_deleted:
        return
    streams = EventStream.objects.filter(owner_id__in=last_deleted)
    # One statement for all the owners, in a transaction of its own, not the batch's: a
    # stream numbers its owner's new events, so it is held for milliseconds only. Locked in
    # owner order first, so that two callers never wait for each other in a cycle.
    with transaction.atomic(using=streams.db):
        list(streams.select_for_update().order_by("owner_id").values_list("pk", flat=True))
        streams.update(
            pruned_through=Greatest(
                "pruned_through",
                Case(
                    *(When(owner_id=owner, then=last) for owner, last in last_deleted.items()),
                    default="pruned_through",
                    output_field=BigIntegerField(),
                ),
            )
        )


def events_delete(*, event_ids: Sequence[int], batch_size: int) -> None:
    """Delete these events with their deliveries, in the caller's transaction.

    At most `batch_size` rows per statement. The caller tells the streams first
    (events_mark_pruned).
    """
    deliveries = Delivery.objects.filter(event__in=event_ids)
    # One query instead of seven for the events of an owner without webhooks, most of them: a
    # callback is found through its deliveries too.
    if deliveries.exists():
        # A job's callback has done its work once its one event is gone.
        callbacks = list(
            Endpoint.objects.filter(job__isnull=False, deliveries__event__in=event_ids)
            .values_list("pk", flat=True)
            .distinct()
        )
        webhooks_delete(deliveries, callbacks=callbacks, batch_size=batch_size)
    delete_in_batches(Event.objects.filter(pk__in=event_ids), batch_size=batch_size)


def webhooks_delete(
    deliveries: QuerySet[Delivery], *, callbacks: Sequence[uuid.UUID], batch_size: int
) -> None:
    """Delete `deliveries` and the `callbacks` endpoints, with their logs, in batches."""
    for rows in (
        DeliveryAttempt.objects.filter(delivery__in=deliveries),
        DeliveryAttempt.objects.filter(endpoint__in=callbacks),
        deliveries,
        Delivery.objects.filter(endpoint__in=callbacks),
        Endpoint.objects.filter(pk__in=callbacks),
    ):
        delete_in_batches(rows, batch_size=batch_size)
