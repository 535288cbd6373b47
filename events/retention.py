"""Deleting events past EVENT_RETENTION_DAYS, with their webhook deliveries and callbacks."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from events.models import Event, EventStream
from events.recording import number_events
from webhooks.models import Endpoint

# Events deleted per transaction: short ones, which never hold a user's stream for long.
PURGE_BATCH = 5_000


def events_purge_expired() -> int:
    """Delete the events older than the retention period, oldest first; return how many.

    Each owner's stream remembers the last number deleted, so that a client resuming from
    before it is told that it missed events.
    """
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
            expired = Event.objects.filter(pk__in=batch)
            # Numbered first, so that a stream resuming from before them is told they went.
            for owner_id in set(expired.filter(seq=None).values_list("owner_id", flat=True)):
                while expired.filter(owner_id=owner_id, seq=None).exists():
                    number_events(owner_id)
            for owner_id, last in (
                expired.values("owner_id").annotate(last=Max("seq")).values_list("owner_id", "last")
            ):
                EventStream.objects.filter(owner_id=owner_id, pruned_through__lt=last).update(
                    pruned_through=last
                )
            # A job's callback has done its work once its one event is gone.
            Endpoint.objects.filter(job__isnull=False, deliveries__event__in=batch).delete()
            expired.delete()
        total += len(batch)
        if len(batch) < PURGE_BATCH:
            return total
