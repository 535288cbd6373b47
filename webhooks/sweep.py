"""Beat's webhook sweeps: what a lost announcement or task left undone, done within seconds."""

from django.db.models import F
from django.utils import timezone

from events.models import EventStream
from events.recording import send_fan_out
from jobs.models import Job
from webhooks.delivery import kick
from webhooks.endpoints import hook_owners
from webhooks.models import Delivery, Endpoint

# Due deliveries read per sweep, oldest first; the endpoints among them are sent tasks.
SWEEP_DELIVERIES = 5_000


def webhooks_send_due() -> None:
    """Kick the endpoints with due deliveries: retries whose wait is over, and lost tasks."""
    due = Delivery.objects.filter(
        status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now()
    ).order_by("next_attempt_at")
    kick(set(due.values_list("endpoint_id", flat=True)[:SWEEP_DELIVERIES]))


def webhooks_fan_out_missed() -> None:
    """Fan out the owners whose events have no deliveries yet, and tell Redis who they are."""
    standing = Endpoint.objects.filter(enabled=True, job=None)
    callbacks = Endpoint.objects.filter(enabled=True, job__status__in=Job.ACTIVE_STATUSES)
    hooked = set(standing.values_list("owner_id", flat=True).distinct())
    hooked |= set(callbacks.values_list("owner_id", flat=True).distinct())
    hook_owners(sorted(hooked))
    lagging = EventStream.objects.filter(owner_id__in=hooked, fanned_out_seq__lt=F("last_seq"))
    for owner_id in lagging.values_list("owner_id", flat=True):
        send_fan_out(owner_id)
