"""The events process when its Redis goes away and comes back."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from events.tests.live import EventsProcess, open_stream, token_for
from jobs import services
from scripts import localredis

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def later_job(owner, name: str) -> None:
    services.job_create(
        owner=owner,
        name=name,
        parameters={"message": "hi"},
        scheduled_time=timezone.now() + timedelta(hours=1),
    )


def test_streams_read_again_as_soon_as_redis_is_back(tmp_path, verified_user):
    port = localredis.free_port()
    redis_process, redis_url = localredis.start_redis(port, tmp_path / "redis")
    # A keep-alive far away: only the hub's wake-up after reconnecting can bring the event.
    events = EventsProcess(tmp_path, REDIS_URL=redis_url, EVENT_STREAM_KEEPALIVE_SECONDS="60")
    try:
        later_job(verified_user, "before")
        with open_stream(events.url, token_for(verified_user)) as stream:
            stream.events(1)  # The stream has read the table, and waits.
            localredis.stop_redis(redis_process)
            # Announced to the test's Redis, which this process does not hear: as if lost.
            later_job(verified_user, "while Redis was away")
            time.sleep(1)  # The hub is trying to subscribe again meanwhile.
            redis_process, _ = localredis.start_redis(port, tmp_path / "redis")
            back = time.monotonic()
            [event] = stream.events(1, timeout=8)
            waited = time.monotonic() - back
    finally:
        events.stop()
        localredis.stop_redis(redis_process)

    assert (event.id, event.event) == (2, "job.pending")
    assert waited < 7  # The pauses between attempts grow to 5 s at most.
    assert "events hub lost Redis" in events.process.log_tail(20_000)
