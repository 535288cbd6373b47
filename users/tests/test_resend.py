from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

from users.models import CustomUser

pytestmark = pytest.mark.django_db

ACCEPTED = {
    "detail": "If the address needs confirming, a new code is on its way. "
    "You can ask again every 60 seconds, up to 5 times an hour and 20 times a day."
}


def resend(post, user, password: str, **extra):
    return post("users:resend-otp", {"email": user.email, "password": password}, **extra)


def test_resend_sends_a_new_code_to_an_unverified_address(
    post, mailoutbox, unverified_user, password
):
    data = {"email": unverified_user.email.upper(), "password": password}
    response = post("users:resend-otp", data)

    assert response.status_code == 202
    assert response.json() == ACCEPTED
    [message] = mailoutbox
    assert message.to == [unverified_user.email]
    assert message.subject == "Your confirmation code"


def test_resend_within_the_cooldown_sends_nothing_until_it_ends(
    post, mailoutbox, unverified_user, password
):
    resend(post, unverified_user, password)
    second = resend(post, unverified_user, password)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        third = resend(post, unverified_user, password)

    assert second.status_code == third.status_code == 202
    assert second.json() == third.json() == ACCEPTED
    assert len(mailoutbox) == 2


def test_resend_for_an_unknown_address_answers_the_same_and_sends_nothing(
    post, mailoutbox, password
):
    data = {"email": "nobody@example.com", "password": password}
    response = post("users:resend-otp", data)

    assert response.status_code == 202
    assert response.json() == ACCEPTED
    assert mailoutbox == []


def test_resend_for_a_verified_address_answers_the_same_and_sends_nothing(
    post, mailoutbox, verified_user, password
):
    response = resend(post, verified_user, password)

    assert response.status_code == 202
    assert response.json() == ACCEPTED
    assert mailoutbox == []


def test_resend_rejects_a_malformed_address_keyed_by_email(post, password):
    response = post("users:resend-otp", {"email": "not-an-address", "password": password})

    assert response.status_code == 400
    assert set(response.data) == {"email"}


def test_resend_past_the_hourly_cap_answers_the_same_and_sends_nothing(
    post, mailoutbox, unverified_user, password
):
    start = timezone.now()
    responses = []
    for attempt in range(6):
        with time_machine.travel(start + timedelta(minutes=2 * attempt)):
            responses.append(resend(post, unverified_user, password))

    assert [response.status_code for response in responses] == [202] * 6
    assert all(response.json() == ACCEPTED for response in responses)
    assert len(mailoutbox) == 5


@pytest.mark.parametrize(
    ("route", "scope"),
    [
        ("users:register", "register"),
        ("users:verify-otp", "otp"),
        ("users:resend-otp", "otp"),
        ("users:password-reset", "otp"),
        ("users:password-reset-confirm", "otp"),
        ("users:login-unlock", "otp"),
    ],
)
def test_public_account_endpoints_are_throttled_per_scope(post, throttle_rates, route, scope):
    # Lift the per-IP email caps (users.throttles), so the scope is what trips.
    throttle_rates(otp_ip_hour="1000/hour", otp_ip_day="1000/day")
    allowed, _ = ScopedRateThrottle().parse_rate(api_settings.DEFAULT_THROTTLE_RATES[scope])
    for _ in range(allowed):
        assert post(route, {}).status_code == 400

    assert post(route, {}).status_code == 429


def test_resend_needs_the_password_of_the_sign_up(post, mailoutbox, unverified_user):
    response = post("users:resend-otp", {"email": unverified_user.email})

    assert response.status_code == 400
    assert set(response.data) == {"password"}
    assert mailoutbox == []


def test_a_resent_code_confirms_the_sign_up_made_with_that_password(
    post, last_code, unverified_user, password
):
    resend(post, unverified_user, password)

    verify = post("users:verify-otp", {"email": unverified_user.email, "otp": last_code()})

    assert verify.status_code == 200
    user = CustomUser.objects.get(pk=unverified_user.pk)
    assert user.is_verified
    assert user.check_password(password)
