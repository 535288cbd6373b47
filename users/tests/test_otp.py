import hmac
from datetime import timedelta
from hashlib import sha256

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from users import otp
from users.models import EmailCode
from users.services import user_verify_email

VERIFY = EmailCode.Purpose.VERIFY_EMAIL

pytestmark = pytest.mark.django_db


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_code_is_stored_only_as_a_hash_keyed_to_user_and_purpose(issue_code, unverified_user):
    code = issue_code(unverified_user)

    row = EmailCode.objects.get()
    message = f"{unverified_user.pk}:verify_email:{code}".encode()
    assert row.code_hash == hmac.new(settings.OTP_HMAC_KEY.encode(), message, sha256).hexdigest()
    assert row.code_hash != sha256(code.encode()).hexdigest()


def test_hash_differs_for_another_user_or_purpose():
    hashes = {
        otp.otp_hash(user_id=1, purpose="verify_email", code="123456"),
        otp.otp_hash(user_id=2, purpose="verify_email", code="123456"),
        otp.otp_hash(user_id=1, purpose="password_reset", code="123456"),
    }
    assert len(hashes) == 3


def test_codes_come_from_secrets_zero_padded_to_six_digits(
    monkeypatch, issue_code, unverified_user
):
    monkeypatch.setattr(otp.secrets, "randbelow", lambda upper: 42 if upper == 10**6 else 0)

    assert issue_code(unverified_user) == "000042"


def test_issue_expires_the_code_after_the_ttl(issue_code, unverified_user):
    issue_code(unverified_user)

    row = EmailCode.objects.get()
    assert row.expires_at - row.created_at == timedelta(minutes=10)


def test_issue_within_the_cooldown_sends_nothing(issue_code, unverified_user, mailoutbox):
    issue_code(unverified_user)

    assert not otp.otp_issue(user=unverified_user, purpose=VERIFY)
    assert EmailCode.objects.count() == 1


def test_issuing_a_new_code_revokes_the_older_open_one(issue_code, unverified_user):
    issue_code(unverified_user)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        issue_code(unverified_user)

    older, newer = EmailCode.objects.order_by("created_at")
    assert older.revoked_at is not None
    assert newer.revoked_at is None


def test_verify_rejects_a_code_for_another_purpose(issue_code, unverified_user):
    code = issue_code(unverified_user)

    assert otp.otp_verify(email=unverified_user.email, code=code, purpose="password_reset") is None


def test_purge_deletes_only_codes_expired_over_a_day_ago(issue_code, user_factory):
    issue_code(user_factory(is_verified=False))
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=9)):
        issue_code(user_factory(is_verified=False))
        assert otp.otp_purge_expired() == 0
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=11)):
        assert otp.otp_purge_expired() == 1

    assert EmailCode.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_simultaneous_right_codes_confirm_exactly_once(
    issue_code, run_at_once, unverified_user
):
    code = issue_code(unverified_user)

    results = run_at_once(20, lambda: user_verify_email(email=unverified_user.email, code=code))

    assert sum(result is not None for result in results) == 1
    unverified_user.refresh_from_db()
    assert unverified_user.is_verified
    assert EmailCode.objects.get().used_at is not None


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_guesses_each_count_one_attempt_below_the_cap(
    settings, issue_code, run_at_once, unverified_user
):
    settings.OTP_MAX_ATTEMPTS = 20
    code = wrong(issue_code(unverified_user))

    results = run_at_once(
        10, lambda: otp.otp_verify(email=unverified_user.email, code=code, purpose=VERIFY)
    )

    assert results == [None] * 10
    assert EmailCode.objects.get().attempts == 10


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_guesses_past_the_cap_are_refused_unevaluated_and_burn_the_code(
    issue_code, run_at_once, unverified_user
):
    code = issue_code(unverified_user)

    run_at_once(
        10, lambda: otp.otp_verify(email=unverified_user.email, code=wrong(code), purpose=VERIFY)
    )

    burned = EmailCode.objects.get()
    assert burned.attempts == 5
    assert burned.revoked_at is not None
    assert user_verify_email(email=unverified_user.email, code=code) is None
