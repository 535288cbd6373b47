"""Webhooks end to end: a real job worker and webhooks worker, a real receiver on loopback."""

import pytest

from jobs.tests.live import wait_for
from webhooks.models import Delivery
from webhooks.signing import verify

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _verified(received, secret: str) -> bool:
    headers = received.headers
    return verify(
        secret,
        webhook_id=headers["webhook-id"],
        timestamp=int(headers["webhook-timestamp"]),
        body=received.body,
        header=headers["webhook-signature"],
    )


def test_a_job_s_events_reach_its_endpoint_and_its_callback(
    live_worker, live_webhooks, auth_client, receiver, loopback_allowed
):
    endpoint = auth_client.post(
        "/api/webhooks/",
        {"url": receiver.url + "/all", "event_types": ["job.started", "job.completed"]},
    ).data
    created = auth_client.post(
        "/api/jobs/",
        {"name": "hooked", "job_type": "echo", "parameters": {}, "callback_url": receiver.url},
    ).data

    wait_for(
        lambda: len(receiver.received) >= 3,
        timeout=30,
        message=f"3 deliveries expected, got {[r.path for r in receiver.received]}",
    )

    by_path = {}
    for received in receiver.received:
        by_path.setdefault(received.path, []).append(received)
    started, completed = sorted(by_path["/hook/all"], key=lambda r: r.payload["id"])
    assert [started.payload["type"], completed.payload["type"]] == [
        "job.started",
        "job.completed",
    ]
    assert all(_verified(r, endpoint["secret"]) for r in (started, completed))
    [callback] = by_path["/hook"]
    assert callback.payload["type"] == "job.completed"
    assert callback.payload["data"]["job"]["id"] == created["id"]
    assert _verified(callback, created["callback_secret"])
    wait_for(
        lambda: Delivery.objects.filter(status="succeeded").count() == 3,
        timeout=10,
        message="the deliveries were not recorded as succeeded",
    )


@pytest.fixture(scope="module")
def events_url(django_db_setup, tmp_path_factory):
    from events.tests.live import EventsProcess

    process = EventsProcess(tmp_path_factory.mktemp("events"), EVENT_STREAM_KEEPALIVE_SECONDS="1")
    yield process.url
    process.stop()


def test_a_client_follows_its_job_by_stream_and_webhook_without_polling(
    live_worker, live_webhooks, events_url, auth_client, verified_user, receiver, loopback_allowed
):
    from events.tests.live import open_stream, token_for

    with open_stream(events_url, token_for(verified_user)) as stream:
        stream.until(lambda frame: frame.is_keepalive)  # Open, and nothing told yet.
        created = auth_client.post(
            "/api/jobs/",
            {"name": "pushed", "job_type": "echo", "parameters": {}, "callback_url": receiver.url},
        ).data
        told = stream.events(3, timeout=30)

    assert [frame.event for frame in told] == ["job.pending", "job.started", "job.completed"]
    assert [frame.id for frame in told] == [1, 2, 3]
    assert all(frame.data["data"]["job"]["id"] == created["id"] for frame in told)
    wait_for(lambda: receiver.received, timeout=30, message="the callback got nothing")
    [callback] = receiver.received
    assert callback.payload == told[-1].data
    assert _verified(callback, created["callback_secret"])
