"""An event as clients receive it, in the stream and in webhooks: one shape for both."""

from typing import Any

from django.conf import settings
from django.urls import reverse

from events.models import Event, EventType


def event_payload(event: Event) -> dict[str, Any]:
    """The event's JSON: what changed, and links to read more; never the job's output."""
    job: dict[str, Any] = {
        "id": str(event.job_id),
        "status": event.status,
        "attempt": event.attempt,
        "progress": event.progress,
        "waiting_for": event.waiting_for or None,
        "url": settings.PUBLIC_URL + reverse("job-detail", args=[event.job_id]),
    }
    if event.type == EventType.COMPLETED:
        job["result_url"] = settings.PUBLIC_URL + reverse("job-result", args=[event.job_id])
    return {
        "id": event.seq,
        "type": event.type,
        "timestamp": event.created_at.isoformat(),
        "data": {"job": job},
    }
