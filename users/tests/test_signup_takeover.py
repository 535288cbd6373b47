"""Pre-hijacking: someone signs up with another person's address before they do.

The code that is confirmed decides the account's password: the one chosen in the sign-up the
code was sent for. An unconfirmed sign-up never leaves its password on the owner's account.
"""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from users.models import CustomUser
from users.tests.conftest import code_in

pytestmark = pytest.mark.django_db

CAROL = "carol@example.com"
ATTACKER_PASSWORD = "attackers-own-password-41"
CAROL_PASSWORD = "carols-real-password-77"
ATTACKER_IP = "203.0.113.66"


def sign_up(post, password: str, **extra):
    return post("users:register", {"email": CAROL, "password": password}, **extra)


def login(post, password: str):
    return post("users:login", {"email": CAROL, "password": password})


def codes_sent(mailoutbox) -> list[str]:
    return [code_in(message) for message in mailoutbox if message.to == [CAROL]]


def test_the_owner_who_signs_up_after_an_attacker_gets_the_account_with_her_password(
    post, mailoutbox
):
    first = sign_up(post, ATTACKER_PASSWORD, REMOTE_ADDR=ATTACKER_IP)
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        second = sign_up(post, CAROL_PASSWORD)
        _, carols_code = codes_sent(mailoutbox)
        verify = post("users:verify-otp", {"email": CAROL, "otp": carols_code})

        assert first.status_code == second.status_code == 201
        assert verify.status_code == 200
        assert login(post, CAROL_PASSWORD).status_code == 200
        assert login(post, ATTACKER_PASSWORD).status_code == 401


def test_an_attacker_who_signs_up_after_the_owner_cannot_change_what_her_code_confirms(
    post, mailoutbox
):
    sign_up(post, CAROL_PASSWORD)
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        sign_up(post, ATTACKER_PASSWORD, REMOTE_ADDR=ATTACKER_IP)
        carols_code, _ = codes_sent(mailoutbox)

        assert post("users:verify-otp", {"email": CAROL, "otp": carols_code}).status_code == 200
        assert login(post, CAROL_PASSWORD).status_code == 200
        assert login(post, ATTACKER_PASSWORD).status_code == 401


def test_confirming_a_sign_up_retires_the_codes_of_the_others(post, mailoutbox):
    sign_up(post, ATTACKER_PASSWORD, REMOTE_ADDR=ATTACKER_IP)
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        sign_up(post, CAROL_PASSWORD)
        attackers_code, carols_code = codes_sent(mailoutbox)
        post("users:verify-otp", {"email": CAROL, "otp": carols_code})

        late = post("users:verify-otp", {"email": CAROL, "otp": attackers_code})

        assert late.status_code == 400
        assert login(post, CAROL_PASSWORD).status_code == 200


def test_until_confirmed_the_newest_sign_up_is_told_to_confirm(post, mailoutbox):
    sign_up(post, ATTACKER_PASSWORD, REMOTE_ADDR=ATTACKER_IP)
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        sign_up(post, CAROL_PASSWORD)

        assert login(post, CAROL_PASSWORD).json()["code"] == "email_not_verified"
        # The attacker's password no longer answers for the account at all.
        assert login(post, ATTACKER_PASSWORD).json()["code"] == "invalid_credentials"
    assert not CustomUser.objects.get(email=CAROL).is_verified


def test_a_password_reset_retires_open_sign_up_codes(post, mailoutbox, last_code):
    sign_up(post, ATTACKER_PASSWORD, REMOTE_ADDR=ATTACKER_IP)
    [attackers_code] = codes_sent(mailoutbox)
    post("users:password-reset", {"email": CAROL})
    post(
        "users:password-reset-confirm",
        {"email": CAROL, "otp": last_code(), "new_password": CAROL_PASSWORD},
    )

    late = post("users:verify-otp", {"email": CAROL, "otp": attackers_code})

    assert late.status_code == 400
    assert login(post, CAROL_PASSWORD).status_code == 200
    assert login(post, ATTACKER_PASSWORD).status_code == 401
