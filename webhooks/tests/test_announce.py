"""An event starts a webhook fan-out only if one of its owner's endpoints wants its type."""

import pytest

from events import recording
from job_system.cache import cache_redis
from webhooks.endpoints import endpoint_create, hook_owners

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _nothing_left_in_redis():
    """User ids repeat on SQLite: an earlier test's hooked owner or fan-out would be this one's."""
    client = cache_redis()
    client.delete(recording.HOOKED_OWNERS_KEY)
    for key in client.scan_iter(match=recording.FAN_OUT_KEY.format(owner="*")):
        client.delete(key)


def _fan_out_on_its_way(owner_id: int) -> bool:
    return bool(cache_redis().exists(recording.FAN_OUT_KEY.format(owner=owner_id)))


def test_only_wanted_event_types_start_a_fan_out(verified_user, monkeypatch):
    sent = []
    monkeypatch.setattr(recording, "send_fan_out", sent.append)
    endpoint_create(
        owner=verified_user, url="https://hooks.example.com/", event_types=["job.completed"]
    )
    hook_owners([verified_user.pk])  # What the creation's commit does.

    recording.announce(verified_user.pk, "job.started")
    assert (sent, _fan_out_on_its_way(verified_user.pk)) == ([], False)

    recording.announce(verified_user.pk, "job.completed")
    recording.announce(verified_user.pk, "job.completed")  # One is on its way already.
    assert (sent, _fan_out_on_its_way(verified_user.pk)) == ([verified_user.pk], True)


def test_owners_without_endpoints_start_no_fan_out(verified_user, monkeypatch):
    sent = []
    monkeypatch.setattr(recording, "send_fan_out", sent.append)
    hook_owners([verified_user.pk])

    recording.announce(verified_user.pk, "job.completed")

    assert sent == []


def test_a_webhook_added_while_its_owner_is_believed_unheard_waits_for_the_sweep(
    verified_user, monkeypatch
):
    sent = []
    monkeypatch.setattr(recording, "send_fan_out", sent.append)
    recording.announce(verified_user.pk, "job.pending")  # Nobody listens: believed a while.
    endpoint_create(owner=verified_user, url="https://hooks.example.com/")
    hook_owners([verified_user.pk])

    recording.announce(verified_user.pk, "job.completed")
    assert sent == []  # Beat's webhook sweep fans it out instead (test_sweep).

    recording.forget_unheard()  # As when UNHEARD_SECONDS have passed.
    recording.announce(verified_user.pk, "job.completed")
    assert sent == [verified_user.pk]
