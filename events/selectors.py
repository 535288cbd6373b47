"""Reading a user's events in order, from a number on, as a stream or a redelivery does."""

from django.db.models import QuerySet

from events.models import Event, EventStream


def events_after(*, owner_id: int, after: int, job_id=None, limit: int = 500) -> list[Event]:
    """The owner's events numbered after `after`, oldest first, at most `limit` of them."""
    events: QuerySet[Event] = Event.objects.filter(owner_id=owner_id, seq__gt=after)
    if job_id is not None:
        events = events.filter(job_id=job_id)
    return list(events.order_by("seq")[:limit])


def stream_position(*, owner_id: int) -> tuple[int, int]:
    """(the owner's last event's number, the last number that retention deleted)."""
    row = (
        EventStream.objects.filter(owner_id=owner_id)
        .values_list("last_seq", "pruned_through")
        .first()
    )
    return row or (0, 0)
