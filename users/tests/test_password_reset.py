from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from users.models import EmailCode

pytestmark = pytest.mark.django_db

RESET = EmailCode.Purpose.PASSWORD_RESET
NEW_PASSWORD = "quiet-meadow-compass-58"
ACCEPTED = {
    "detail": "If the address has an account, a code to reset its password is on its way, "
    "unless the one sent before still works (codes last 30 minutes)."
}
INVALID_CODE = {
    "otp": [
        "The code is invalid or has expired. Codes last 30 minutes and work once; ask for a "
        "new one at /api/password/reset/."
    ]
}


def wrong(code: str) -> str:
    """The code with its first character changed."""
    return ("1" if code[0] == "0" else "0") + code[1:]


def confirm(post, email: str, code: str, password: str = NEW_PASSWORD, field: str = "otp", **extra):
    data = {"email": email, field: code, "new_password": password}
    return post("users:password-reset-confirm", data, **extra)


def assert_refused(response) -> None:
    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert response.data["otp"][0].code == "invalid_code"


@pytest.mark.parametrize("verified", [True, False])
def test_reset_request_emails_a_reset_code_to_an_active_account(
    post, mailoutbox, last_code, user_factory, verified
):
    user = user_factory(is_verified=verified)

    response = post("users:password-reset", {"email": user.email.upper()})

    assert response.status_code == 202
    assert response.json() == ACCEPTED
    [message] = mailoutbox
    assert message.to == [user.email]
    assert message.subject == "Your password reset code"
    assert last_code()
    assert user.email_codes.get().purpose == RESET


def test_reset_request_answers_the_same_for_unknown_and_inactive_addresses_and_sends_nothing(
    post, mailoutbox, user_factory
):
    inactive = user_factory(is_active=False)

    unknown = post("users:password-reset", {"email": "nobody@example.com"})
    deactivated = post("users:password-reset", {"email": inactive.email})

    assert unknown.status_code == deactivated.status_code == 202
    assert unknown.json() == deactivated.json() == ACCEPTED
    assert mailoutbox == []


def test_reset_request_sends_nothing_while_the_last_code_still_works(
    post, mailoutbox, verified_user, throttle_rates
):
    throttle_rates(otp_ip_hour="1000/hour", otp_ip_day="1000/day")
    start = timezone.now()
    responses = []
    # Every 5 minutes for 3 hours: a code lasts 30 minutes, so one email per half hour.
    for minutes in range(0, 180, 5):
        with time_machine.travel(start + timedelta(minutes=minutes, seconds=1)):
            responses.append(post("users:password-reset", {"email": verified_user.email}))

    assert all(response.json() == ACCEPTED for response in responses)
    assert len(mailoutbox) == 6


def test_reset_codes_are_long_and_typed_in_any_case_with_or_without_dashes(
    post, issue_code, verified_user
):
    code = issue_code(verified_user, RESET)

    assert len(code.replace("-", "")) == 16
    assert confirm(post, verified_user.email, code.replace("-", " ").lower()).status_code == 200


def test_wrong_guesses_never_use_up_the_owners_reset_code(post, issue_code, verified_user):
    code = issue_code(verified_user, RESET)
    for attempt in range(50):
        guess = f"{attempt:016d}"
        assert_refused(
            confirm(post, verified_user.email, guess, REMOTE_ADDR=f"203.0.113.{attempt}")
        )

    assert confirm(post, verified_user.email, code).status_code == 200


def test_reset_request_rejects_a_malformed_address_keyed_by_email(post):
    response = post("users:password-reset", {"email": "not-an-address"})

    assert response.status_code == 400
    assert set(response.data) == {"email"}


@pytest.mark.parametrize("field", ["otp", "otp_code"])
def test_reset_confirm_sets_the_password_and_confirms_the_address(
    post, issue_code, unverified_user, password, field
):
    code = issue_code(unverified_user, RESET)

    response = confirm(post, unverified_user.email, code, field=field)

    assert response.status_code == 200
    unverified_user.refresh_from_db()
    assert unverified_user.check_password(NEW_PASSWORD)
    assert unverified_user.is_verified
    assert unverified_user.email_codes.get().used_at is not None
    login = {"email": unverified_user.email, "password": NEW_PASSWORD}
    assert post("users:login", login).status_code == 200
    old_login = {"email": unverified_user.email, "password": password}
    assert post("users:login", old_login).status_code == 401


def test_reset_confirm_signs_out_every_session(api_client, post, bearer, issue_code, verified_user):
    code = issue_code(verified_user, RESET)
    refresh = bearer(verified_user)
    other_refresh = str(RefreshToken.for_user(verified_user))

    assert confirm(post, verified_user.email, code).status_code == 200

    assert api_client.get(reverse("users:me")).status_code == 401
    for token in (refresh, other_refresh):
        refreshed = APIClient().post(reverse("users:token-refresh"), {"refresh": token})
        assert refreshed.status_code == 401


def test_reset_confirm_emails_the_owner(post, issue_code, verified_user, mailoutbox):
    code = issue_code(verified_user, RESET)

    confirm(post, verified_user.email, code)

    assert mailoutbox[-1].subject == "Your password was changed"


def test_reset_confirm_rejects_a_wrong_code(post, issue_code, verified_user, password):
    code = issue_code(verified_user, RESET)

    assert_refused(confirm(post, verified_user.email, wrong(code)))
    verified_user.refresh_from_db()
    assert verified_user.check_password(password)


def test_reset_confirm_rejects_an_expired_code(post, issue_code, verified_user):
    code = issue_code(verified_user, RESET)

    with time_machine.travel(timezone.now() + timedelta(minutes=30, seconds=1)):
        assert_refused(confirm(post, verified_user.email, code))


def test_reset_confirm_rejects_a_used_code(post, issue_code, verified_user):
    code = issue_code(verified_user, RESET)
    confirm(post, verified_user.email, code)

    assert_refused(confirm(post, verified_user.email, code, "another-fine-passphrase-3"))


def test_reset_confirm_answers_an_unknown_address_like_a_wrong_code(post):
    assert_refused(confirm(post, "nobody@example.com", "0123-4567-89AB-CDEF"))


def test_reset_confirm_refuses_a_deactivated_account(post, issue_code, user_factory, password):
    user = user_factory()
    code = issue_code(user, RESET)
    user.is_active = False
    user.save()

    assert_refused(confirm(post, user.email, code))
    user.refresh_from_db()
    assert user.check_password(password)


@pytest.mark.parametrize(
    ("new_password", "code"),
    [
        ("short-9", "password_too_short"),
        ("password1234", "password_too_common"),
        ("adalovelace1", "password_too_similar"),
    ],
)
def test_reset_confirm_rejects_a_weak_password_without_spending_the_code(
    post, issue_code, user_factory, new_password, code
):
    user = user_factory(email="ada.lovelace@example.com")
    otp = issue_code(user, RESET)

    response = confirm(post, user.email, otp, new_password)

    assert response.status_code == 400
    assert set(response.data) == {"new_password"}
    assert code in [error.code for error in response.data["new_password"]]
    assert user.email_codes.get().attempts == 0
    assert confirm(post, user.email, otp).status_code == 200


def test_a_confirmation_code_cannot_reset_a_password(post, issue_code, unverified_user, password):
    code = issue_code(unverified_user)

    assert_refused(confirm(post, unverified_user.email, code))
    unverified_user.refresh_from_db()
    assert unverified_user.check_password(password)


def test_a_reset_code_cannot_confirm_an_address(post, issue_code, unverified_user):
    code = issue_code(unverified_user, RESET)

    response = post("users:verify-otp", {"email": unverified_user.email, "otp": code})

    assert response.status_code == 400
    assert response.data["otp"][0].code == "invalid_code"
    unverified_user.refresh_from_db()
    assert not unverified_user.is_verified


def test_a_new_reset_code_leaves_an_open_confirmation_code_working(
    post, issue_code, unverified_user
):
    confirmation = issue_code(unverified_user)
    issue_code(unverified_user, RESET)

    response = post("users:verify-otp", {"email": unverified_user.email, "otp": confirmation})

    assert response.status_code == 200
