from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from users.models import EmailCode

pytestmark = pytest.mark.django_db

INVALID_CODE = {
    "otp": [
        "The code is invalid or has expired. Codes last 10 minutes, work once, and stop "
        "working after 5 wrong tries; ask for a new one at /api/resend-otp/."
    ]
}


def assert_refused(response) -> None:
    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert response.data["otp"][0].code == "invalid_code"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


@pytest.mark.parametrize("route", ["users:verify-otp", "users:verify-email"])
@pytest.mark.parametrize("field", ["otp", "otp_code"])
def test_verify_confirms_the_address(post, issue_code, unverified_user, route, field):
    code = issue_code(unverified_user)

    response = post(route, {"email": unverified_user.email, field: code})

    assert response.status_code == 200
    unverified_user.refresh_from_db()
    assert unverified_user.is_verified
    assert unverified_user.email_codes.get().used_at is not None


def test_register_verify_and_log_in(post, last_code):
    account = {"email": "ada@example.com", "password": "plum-orchard-lantern-93"}
    post("users:register", account)

    assert (
        post("users:verify-otp", {"email": "ADA@example.com", "otp": last_code()}).status_code
        == 200
    )
    assert set(post("users:login", account).data) == {"access", "refresh"}


def test_verify_accepts_a_code_just_before_it_expires(post, issue_code, unverified_user):
    code = issue_code(unverified_user)

    with time_machine.travel(timezone.now() + timedelta(minutes=9, seconds=59)):
        response = post("users:verify-otp", {"email": unverified_user.email, "otp": code})

    assert response.status_code == 200


def test_verify_rejects_expired_code(post, issue_code, unverified_user):
    code = issue_code(unverified_user)

    with time_machine.travel(timezone.now() + timedelta(minutes=10, seconds=1)):
        response = post("users:verify-otp", {"email": unverified_user.email, "otp": code})

    assert_refused(response)
    unverified_user.refresh_from_db()
    assert not unverified_user.is_verified


def test_verify_rejects_wrong_code(post, issue_code, unverified_user):
    code = issue_code(unverified_user)

    assert_refused(post("users:verify-otp", {"email": unverified_user.email, "otp": wrong(code)}))
    assert unverified_user.email_codes.get().attempts == 1


def test_verify_rejects_a_used_code(post, issue_code, unverified_user):
    code = issue_code(unverified_user)
    post("users:verify-otp", {"email": unverified_user.email, "otp": code})

    assert_refused(post("users:verify-otp", {"email": unverified_user.email, "otp": code}))


def test_verify_burns_the_code_after_five_wrong_tries(post, issue_code, unverified_user):
    code = issue_code(unverified_user)
    for _ in range(5):
        post("users:verify-otp", {"email": unverified_user.email, "otp": wrong(code)})

    assert_refused(post("users:verify-otp", {"email": unverified_user.email, "otp": code}))
    burned = unverified_user.email_codes.get()
    assert burned.attempts == 5
    assert burned.revoked_at is not None


def test_verify_accepts_the_right_code_after_four_wrong_tries(post, issue_code, unverified_user):
    code = issue_code(unverified_user)
    for _ in range(4):
        post("users:verify-otp", {"email": unverified_user.email, "otp": wrong(code)})

    assert (
        post("users:verify-otp", {"email": unverified_user.email, "otp": code}).status_code == 200
    )


def test_verify_takes_any_open_sign_up_code_and_retires_the_others(
    post, issue_code, unverified_user
):
    older = issue_code(unverified_user)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        newer = issue_code(unverified_user)
        accepted = post("users:verify-otp", {"email": unverified_user.email, "otp": older})
        refused = post("users:verify-otp", {"email": unverified_user.email, "otp": newer})

    assert accepted.status_code == 200
    assert_refused(refused)
    assert EmailCode.objects.filter(revoked_at__isnull=False).count() == 1


def test_a_wrong_guess_counts_against_every_open_sign_up_code(post, issue_code, unverified_user):
    first = issue_code(unverified_user)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        issue_code(unverified_user)
        post("users:verify-otp", {"email": unverified_user.email, "otp": wrong(first)})

    assert list(EmailCode.objects.values_list("attempts", flat=True)) == [1, 1]


def test_verify_answers_an_unknown_address_like_a_wrong_code(post):
    assert_refused(post("users:verify-otp", {"email": "nobody@example.com", "otp": "123456"}))


def test_verify_answers_a_confirmed_address_like_a_wrong_code(post, verified_user):
    assert_refused(post("users:verify-otp", {"email": verified_user.email, "otp": "123456"}))


def test_verify_answers_a_malformed_code_like_a_wrong_code(post, issue_code, unverified_user):
    issue_code(unverified_user)

    assert_refused(post("users:verify-otp", {"email": unverified_user.email, "otp": "12ab5"}))
    assert unverified_user.email_codes.get().attempts == 0


def test_verify_requires_a_code(post, unverified_user):
    response = post("users:verify-otp", {"email": unverified_user.email})

    assert response.status_code == 400
    assert response.data["otp"][0].code == "required"


def test_verify_ignores_a_stale_bearer_token(api_client, post, issue_code, unverified_user):
    code = issue_code(unverified_user)
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    assert (
        post("users:verify-otp", {"email": unverified_user.email, "otp": code}).status_code == 200
    )
