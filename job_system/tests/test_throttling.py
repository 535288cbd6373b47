"""The counting throttle on job submissions (job_system.throttling)."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from job_system.throttling import CountingRateThrottle

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_cache_keys")]


@pytest.fixture
def job_create_rate(monkeypatch):
    def _set(rate: str) -> None:
        rates = {**CountingRateThrottle.THROTTLE_RATES, "job_create": rate}
        monkeypatch.setattr(CountingRateThrottle, "THROTTLE_RATES", rates)

    return _set


def submit(client, n: int):
    return client.post("/api/jobs/", {"name": f"job {n}"}, format="json")


def test_submissions_past_the_rate_are_refused_with_429_and_retry_after(
    auth_client, job_create_rate
):
    job_create_rate("5/min")
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start + timedelta(seconds=10), tick=False):
        statuses = [submit(auth_client, n).status_code for n in range(6)]
        refused = submit(auth_client, 6)

    assert statuses == [201] * 5 + [429]
    assert refused.json()["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 50


def test_refused_requests_do_not_count(auth_client, job_create_rate):
    job_create_rate("2/min")
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        assert [submit(auth_client, n).status_code for n in range(2)] == [201, 201]
        assert [submit(auth_client, n).status_code for n in range(5)] == [429] * 5
    # Two windows later nothing weighs any more; had the refusals counted, still refused.
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        assert [submit(auth_client, n).status_code for n in range(2)] == [201, 201]


def test_the_previous_window_weighs_by_the_part_still_covered(auth_client, job_create_rate):
    job_create_rate("4/min")
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start + timedelta(seconds=50), tick=False):
        assert [submit(auth_client, n).status_code for n in range(4)] == [201] * 4
    # 15 s into the next window, 3/4 of the last one is still inside the sliding minute.
    with time_machine.travel(start + timedelta(seconds=75), tick=False):
        assert submit(auth_client, 4).status_code == 201  # 1 + 4 * 0.75 = 4
        assert submit(auth_client, 5).status_code == 429
    with time_machine.travel(start + timedelta(seconds=105), tick=False):
        assert submit(auth_client, 6).status_code == 201  # 2 + 4 * 0.25 = 3


def test_each_user_has_their_own_count(auth_client, user_factory, job_create_rate):
    job_create_rate("1/min")
    other_client = APIClient()
    other_client.force_authenticate(user_factory(is_verified=True))
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        assert submit(auth_client, 1).status_code == 201
        assert submit(auth_client, 2).status_code == 429
        assert submit(other_client, 3).status_code == 201
