"""An event starts a webhook fan-out only if one of its owner's endpoints wants its type."""

import pytest

from events import recording
from job_system.cache import cache_redis
from webhooks.endpoints import endpoint_create, hook_owners

pytestmark = pytest.mark.django_db


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
