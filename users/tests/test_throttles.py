"""Per-client-IP caps on the endpoints that email codes (users.throttles)."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

pytestmark = pytest.mark.django_db

CLIENT = "203.0.113.7"
OTHER_CLIENT = "198.51.100.23"


def resend(post, n: int, ip: str = CLIENT):
    """Ask for a code for an address nobody has, as the client at `ip`."""
    data = {"email": f"nobody{n}@example.com", "password": "plum-orchard-lantern-93"}
    return post("users:resend-otp", data, REMOTE_ADDR=ip)


def test_one_ip_is_refused_with_429_past_ten_code_requests_an_hour(post):
    statuses = [resend(post, n).status_code for n in range(11)]

    assert statuses == [202] * 10 + [429]
    assert resend(post, 11).json()["code"] == "throttled"
    assert resend(post, 12, ip=OTHER_CLIENT).status_code == 202
    with time_machine.travel(timezone.now() + timedelta(hours=1, seconds=1)):
        assert resend(post, 13).status_code == 202


def test_one_ip_is_refused_with_429_past_fifty_code_requests_a_day(post):
    start = timezone.now()
    statuses = []
    # Ten requests in each of six hours: the hourly cap never trips, the daily one does.
    for hour in range(6):
        with time_machine.travel(start + timedelta(minutes=61 * hour)):
            statuses += [resend(post, 10 * hour + n).status_code for n in range(10)]

    assert statuses == [202] * 50 + [429] * 10
    with time_machine.travel(start + timedelta(days=1, hours=1)):
        assert resend(post, 60).status_code == 202


def test_register_resend_and_password_reset_share_the_ip_caps(post, throttle_rates):
    throttle_rates(otp_ip_hour="3/hour")
    account = {"email": "ada@example.com", "password": "plum-orchard-lantern-93"}

    register = post("users:register", account, REMOTE_ADDR=CLIENT)
    reset = post("users:password-reset", {"email": "ada@example.com"}, REMOTE_ADDR=CLIENT)
    again = resend(post, 0)
    over = [
        post("users:register", account, REMOTE_ADDR=CLIENT),
        post("users:password-reset", {"email": "ada@example.com"}, REMOTE_ADDR=CLIENT),
        resend(post, 1),
    ]

    assert (register.status_code, reset.status_code, again.status_code) == (201, 202, 202)
    assert [response.status_code for response in over] == [429] * 3


def test_checking_codes_and_logging_in_do_not_count_against_the_ip_caps(post, throttle_rates):
    throttle_rates(otp_ip_hour="1/hour")
    resend(post, 0)

    code = {"email": "a@example.com", "otp": "123456"}
    verify = post("users:verify-otp", code, REMOTE_ADDR=CLIENT)
    login = post("users:login", {"email": "a@example.com", "password": "x"}, REMOTE_ADDR=CLIENT)

    assert (verify.status_code, login.status_code) == (400, 401)


def test_the_ip_is_the_client_behind_the_configured_proxy(post, settings, throttle_rates):
    throttle_rates(otp_ip_hour="1/hour")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    def via_proxy(n: int, client: str):
        return post(
            "users:resend-otp",
            {"email": f"nobody{n}@example.com", "password": "plum-orchard-lantern-93"},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR=client,
        )

    assert via_proxy(0, CLIENT).status_code == 202
    assert via_proxy(1, OTHER_CLIENT).status_code == 202
    assert via_proxy(2, CLIENT).status_code == 429
