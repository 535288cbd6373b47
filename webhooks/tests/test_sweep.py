"""Beat's webhook sweeps: fanning out what a lost announcement left undone."""

import pytest

from events.recording import HOOKED_OWNERS_KEY
from job_system.cache import cache_redis
from jobs import services
from webhooks import delivery, fanout, sweep

# Test transactions never commit, so no announcement runs: as after a Redis wipe, the owner
# is not in Redis's set of hooked owners and no fan-out was sent.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loopback_allowed")]


def _finished_job_with_callback(owner, url: str):
    job, _ = services.job_create(
        owner=owner, name="called back", job_type="echo", parameters={}, callback_url=url
    )
    claimed = services.job_claim(job_id=job.pk, worker="w")
    services.job_complete(job=claimed, output={}, duration_ms=1)
    return job


def test_the_sweep_fans_out_a_finished_job_s_callback_that_no_announcement_started(
    verified_user, receiver
):
    job = _finished_job_with_callback(verified_user, receiver.url)
    cache_redis().hdel(HOOKED_OWNERS_KEY, verified_user.pk)

    swept = sweep.webhooks_fan_out_missed()

    assert swept == [verified_user.pk]
    assert cache_redis().hexists(HOOKED_OWNERS_KEY, verified_user.pk)
    for endpoint_id in fanout.webhooks_fan_out(owner_id=verified_user.pk):
        delivery.webhooks_deliver(endpoint_id=endpoint_id)
    [received] = receiver.received
    assert received.payload["type"] == "job.completed"
    assert received.payload["data"]["job"]["id"] == str(job.pk)


def test_a_told_callback_no_longer_hooks_its_owner(verified_user, receiver):
    _finished_job_with_callback(verified_user, receiver.url)
    fanout.webhooks_fan_out(owner_id=verified_user.pk)
    cache_redis().hdel(HOOKED_OWNERS_KEY, verified_user.pk)

    assert sweep.webhooks_fan_out_missed() == []
    assert not cache_redis().hexists(HOOKED_OWNERS_KEY, verified_user.pk)
