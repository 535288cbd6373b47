"""Beat's webhook sweeps: what a lost announcement or task left undone, done within seconds."""

from django.db.models import F
from django.utils import timezone

from events.models import Event, EventStream
from events.recording import send_fan_out
from webhooks.delivery import kick
from webhooks.endpoints import hook_owners
from webhooks.models import Delivery
from webhooks.selectors import live_endpoints

# Due deliveries read per sweep, oldest first; the endpoints among them are sent tasks.
SWEEP_DELIVERIES = 5_000


def webhooks_send_due() -> None:
    """Kick the endpoints with due deliveries: retries whose wait is over, and lost tasks."""
    due = Delivery.objects.filter(
        status=Delivery.Status.PENDING, next_attempt_at__lte=timezone.now()
    ).order_by("next_attempt_at")
    kick(set(due.values_list("endpoint_id", flat=True)[:SWEEP_DELIVERIES]))


def webhooks_fan_out_missed() -> list[int]:
    """Fan out the owners whose events have no deliveries yet, and tell Redis who they are.

    Return the owners whose fan-outs were sent.
    """
    hooked = sorted(set(live_endpoints().values_list("owner_id", flat=True).distinct()))
    hook_owners(hooked)
    behind = EventStream.objects.filter(owner_id__in=hooked, fanned_out_seq__lt=F("last_seq"))
    # Events not numbered yet are those that no fan-out (nor stream) has read.
    unnumbered = Event.objects.filter(owner_id__in=hooked, seq=None)
    owner_ids = sorted(
        set(behind.values_list("owner_id", flat=True))
        | set(unnumbered.values_list("owner_id", flat=True).distinct())
    )
    for owner_id in owner_ids:
        send_fan_out(owner_id)
    return owner_ids
