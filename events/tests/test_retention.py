from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from events.models import Event, EventStream
from events.recording import number_events
from events.retention import events_purge_expired
from jobs import services

pytestmark = pytest.mark.django_db


def _submit(owner, count: int = 1) -> None:
    for _ in range(count):
        services.job_create(owner=owner, name="a", job_type="echo", parameters={})


def test_events_past_retention_are_deleted_and_the_stream_remembers_how_far(
    verified_user, user_factory, settings
):
    settings.EVENT_RETENTION_DAYS = 7
    other = user_factory()
    with time_machine.travel(timezone.now() - timedelta(days=8)):
        _submit(verified_user, 3)
        _submit(other, 2)
    _submit(verified_user, 2)

    deleted = events_purge_expired()

    assert deleted == 5
    assert list(Event.objects.filter(owner=verified_user).values_list("seq", flat=True)) == [4, 5]
    assert not Event.objects.filter(owner=other).exists()
    assert EventStream.objects.get(owner=verified_user).pruned_through == 3
    assert EventStream.objects.get(owner=other).pruned_through == 2


def test_retention_deletes_in_batches(verified_user, monkeypatch, settings):
    from events import retention

    monkeypatch.setattr(retention, "PURGE_BATCH", 2)
    with time_machine.travel(timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS + 1)):
        _submit(verified_user, 5)

    assert events_purge_expired() == 5
    assert EventStream.objects.get(owner=verified_user).pruned_through == 5


def test_a_purge_with_nothing_expired_deletes_nothing(verified_user):
    _submit(verified_user, 2)

    assert events_purge_expired() == 0
    assert Event.objects.count() == 2


def test_deliveries_go_with_their_events(verified_user, settings):
    from webhooks.endpoints import endpoint_create
    from webhooks.fanout import webhooks_fan_out
    from webhooks.models import Delivery

    endpoint_create(
        owner=verified_user, url="https://hooks.example.com/", event_types=["job.pending"]
    )
    with time_machine.travel(timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS + 1)):
        _submit(verified_user)
        webhooks_fan_out(owner_id=verified_user.pk)
    assert Delivery.objects.count() == 1

    events_purge_expired()

    assert not Delivery.objects.exists()


def _submit_with_callback(owner):
    job, _ = services.job_create(
        owner=owner,
        name="called back",
        job_type="echo",
        parameters={},
        callback_url="https://hooks.example.com/",
    )
    return job


def test_a_callback_goes_once_its_event_is_gone(verified_user, settings):
    from webhooks.fanout import webhooks_fan_out
    from webhooks.models import Endpoint

    with time_machine.travel(timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS + 1)):
        services.job_cancel(job=_submit_with_callback(verified_user))
        webhooks_fan_out(owner_id=verified_user.pk)
    waiting = _submit_with_callback(verified_user)

    events_purge_expired()

    assert list(Endpoint.objects.values_list("job_id", flat=True)) == [waiting.pk]


def test_a_stream_never_forgets_a_later_deletion(verified_user, user_factory, settings):
    other = user_factory()
    with time_machine.travel(timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS + 1)):
        _submit(verified_user, 2)
        _submit(other, 3)
    number_events(verified_user.pk)
    # As if a later purge had told this stream first (two pruners, one ahead of the other).
    assert EventStream.objects.filter(owner=verified_user).update(pruned_through=10) == 1

    assert events_purge_expired() == 5

    assert EventStream.objects.get(owner=verified_user).pruned_through == 10
    assert EventStream.objects.get(owner=other).pruned_through == 3
