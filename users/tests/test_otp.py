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
RESET = EmailCode.Purpose.PASSWORD_RESET
UNLOCK = EmailCode.Purpose.LOGIN_UNLOCK

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


def test_codes_are_drawn_from_a_million_values_as_asvs_asks(monkeypatch, issue_code, user_factory):
    # ASVS 5.0 6.5.4: at least 20 bits, "typically ... 6 random digits is sufficient".
    drawn = []
    randbelow = otp.secrets.randbelow
    monkeypatch.setattr(
        otp.secrets, "randbelow", lambda upper: drawn.append(upper) or randbelow(upper)
    )

    codes = {issue_code(user_factory(is_verified=False)) for _ in range(20)}

    assert drawn == [10**6] * 20
    assert len(codes) > 1
    assert all(len(code) == 6 and code.isdigit() for code in codes)


def test_issue_expires_the_code_after_the_ttl(issue_code, unverified_user):
    issue_code(unverified_user)

    row = EmailCode.objects.get()
    assert row.expires_at - row.created_at == timedelta(minutes=10)


def test_issue_within_the_cooldown_sends_nothing(issue_code, unverified_user, mailoutbox):
    issue_code(unverified_user)

    assert not otp.otp_issue(user=unverified_user, purpose=VERIFY)
    assert EmailCode.objects.count() == 1


def test_each_sign_up_code_stays_open_beside_newer_ones(issue_code, unverified_user):
    issue_code(unverified_user)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        issue_code(unverified_user)

    assert EmailCode.objects.filter(revoked_at=None).count() == 2


@pytest.mark.parametrize("purpose", [RESET, UNLOCK])
def test_no_long_code_is_issued_while_one_is_open(issue_code, verified_user, mailoutbox, purpose):
    issue_code(verified_user, purpose)

    assert not otp.otp_issue(user=verified_user, purpose=purpose)
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        assert otp.otp_issue(user=verified_user, purpose=purpose)
    assert EmailCode.objects.filter(purpose=purpose).count() == 2


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("ABCD-EFGH-JKMN-PQRS", "ABCDEFGHJKMNPQRS"),
        ("abcd efgh jkmn pqrs", "ABCDEFGHJKMNPQRS"),
        ("O1I2-L3AB-CDEF-GHJK", "011213ABCDEFGHJK"),
        ("ABCD-EFGH-JKMN-PQR", None),
        ("ABCD-EFGH-JKMN-PQRU", None),
        ("123456", None),
    ],
)
def test_long_codes_are_read_the_way_people_type_them(typed, canonical):
    assert otp.code_canonical(purpose=RESET, text=typed) == canonical


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
def test_fifty_parallel_wrong_guesses_count_fifty_attempts_under_a_higher_cap(
    settings, issue_code, run_at_once, unverified_user
):
    settings.OTP_MAX_ATTEMPTS = 60
    code = wrong(issue_code(unverified_user))

    results = run_at_once(
        50, lambda: otp.otp_verify(email=unverified_user.email, code=code, purpose=VERIFY)
    )

    assert results == [None] * 50
    assert EmailCode.objects.get().attempts == 50


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_wrong_guesses_evaluate_only_five_and_burn_the_code(
    monkeypatch, issue_code, run_at_once, unverified_user
):
    code = issue_code(unverified_user)
    compared = []
    compare_digest = otp.secrets.compare_digest
    monkeypatch.setattr(
        otp.secrets, "compare_digest", lambda a, b: compared.append(1) or compare_digest(a, b)
    )

    run_at_once(
        50, lambda: otp.otp_verify(email=unverified_user.email, code=wrong(code), purpose=VERIFY)
    )

    assert len(compared) == 5
    burned = EmailCode.objects.get()
    assert burned.attempts == 5
    assert burned.revoked_at is not None
    assert user_verify_email(email=unverified_user.email, code=code) is None


@pytest.mark.django_db(transaction=True)
def test_parallel_requests_for_one_address_send_one_code(monkeypatch, run_at_once, unverified_user):
    sent = []
    monkeypatch.setattr(otp.emails, "email_enqueue", lambda **email: sent.append(email))

    results = run_at_once(20, lambda: otp.otp_issue(user=unverified_user, purpose=VERIFY))

    assert sum(results) == 1
    assert len(sent) == 1
    assert EmailCode.objects.count() == 1


def issue_at(user, start, minutes: float, purpose: str = VERIFY) -> bool:
    with time_machine.travel(start + timedelta(minutes=minutes)):
        return otp.otp_issue(user=user, purpose=purpose)


def test_issue_sends_at_most_five_codes_an_hour_to_one_address(unverified_user):
    start = timezone.now()

    sent = [issue_at(unverified_user, start, 2 * i) for i in range(6)]

    assert sent == [True] * 5 + [False]
    # An hour after the first code, it no longer counts.
    assert issue_at(unverified_user, start, 60.5)
    assert EmailCode.objects.count() == 6


def test_issue_sends_at_most_twenty_codes_a_day_to_one_address(unverified_user):
    start = timezone.now()

    # Every 15 minutes keeps each hour under its cap, so only the daily one can stop a code.
    sent = [issue_at(unverified_user, start, 15 * i) for i in range(21)]

    assert sent == [True] * 20 + [False]
    assert issue_at(unverified_user, start, 24 * 60 + 1)


def test_send_caps_are_counted_per_address_and_purpose(settings, user_factory):
    settings.OTP_MAX_SENDS_PER_HOUR = 1
    capped, other = user_factory(is_verified=False), user_factory(is_verified=False)
    start = timezone.now()
    assert issue_at(capped, start, 0)
    assert not issue_at(capped, start, 2)

    assert issue_at(capped, start, 2, purpose=RESET)
    assert issue_at(other, start, 2)


def test_send_caps_come_from_settings(settings, unverified_user):
    settings.OTP_MAX_SENDS_PER_HOUR = 2
    start = timezone.now()

    assert [issue_at(unverified_user, start, 2 * i) for i in range(3)] == [True, True, False]
