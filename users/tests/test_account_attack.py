"""An attacker who knows only the owner's address, at 1,000 requests an hour from 20 addresses.

The target: they neither get in nor keep the owner from logging in with the right password
(with the unlock code emailed when the account locks) or from resetting it, within 5
minutes. Here the owner must succeed at once, every 15 minutes, which is stricter. The hour
is simulated: the clock moves 3.6 s per attacker request.
"""

import itertools
import random
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from users.tests.conftest import code_in

pytestmark = pytest.mark.django_db

ATTACKERS = [f"203.0.113.{n}" for n in range(1, 21)]
OWNER_IP = "198.51.100.7"
REQUESTS_PER_HOUR = 1000
OWNER_EVERY = timedelta(minutes=15)


def newest_code(mailoutbox, to: str, subject: str) -> str:
    message = next(m for m in reversed(mailoutbox) if m.to == [to] and m.subject == subject)
    return code_in(message)


def test_an_attacker_neither_gets_in_nor_keeps_the_owner_out(
    post, mailoutbox, verified_user, password
):
    email = verified_user.email
    rng = random.Random(20261129)
    attacks = itertools.cycle(
        ["login"] * 5 + ["login_with_code", "reset", "reset", "confirm", "confirm", "unlock"]
    )
    start = timezone.now()
    step = timedelta(hours=1) / REQUESTS_PER_HOUR
    attacker_successes, owner_logins, owner_unlocks, owner_resets = [], 0, 0, 0
    next_owner_turn = start

    def guess() -> str:
        return "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(16))

    for n in range(REQUESTS_PER_HOUR):
        now = start + n * step
        ip = ATTACKERS[n % len(ATTACKERS)]
        with time_machine.travel(now, tick=False):
            kind = next(attacks)
            if kind in ("login", "login_with_code"):
                data = {"email": email, "password": f"guess-{n}"}
                if kind == "login_with_code":
                    data["unlock_code"] = guess()
                response = post("users:login", data, REMOTE_ADDR=ip)
            elif kind == "reset":
                response = post("users:password-reset", {"email": email}, REMOTE_ADDR=ip)
            elif kind == "confirm":
                data = {"email": email, "otp": guess(), "new_password": f"attacker-pw-{n}-xyz"}
                response = post("users:password-reset-confirm", data, REMOTE_ADDR=ip)
            else:
                response = post("users:login-unlock", {"email": email}, REMOTE_ADDR=ip)
            if kind in ("login", "login_with_code", "confirm") and response.status_code == 200:
                attacker_successes.append((n, kind))

            if now < next_owner_turn:
                continue
            next_owner_turn += OWNER_EVERY
            # The owner logs in with the right password; if the account is locked, with the
            # unlock code from their inbox (asking for one if none is open).
            login = {"email": email, "password": password}
            if post("users:login", login, REMOTE_ADDR=OWNER_IP).status_code != 200:
                post("users:login-unlock", {"email": email}, REMOTE_ADDR=OWNER_IP)
                code = newest_code(mailoutbox, email, "Your code to unlock logging in")
                login["unlock_code"] = code
                response = post("users:login", login, REMOTE_ADDR=OWNER_IP)
                assert response.status_code == 200, (n, response.json())
                owner_unlocks += 1
            owner_logins += 1
            # Every half hour the owner also resets the password with the code from their inbox.
            if owner_logins % 2 == 1:
                post("users:password-reset", {"email": email}, REMOTE_ADDR=OWNER_IP)
                code = newest_code(mailoutbox, email, "Your password reset code")
                password = f"owners-new-password-{owner_resets}"
                data = {"email": email, "otp": code, "new_password": password}
                response = post("users:password-reset-confirm", data, REMOTE_ADDR=OWNER_IP)
                assert response.status_code == 200, (n, response.json())
                owner_resets += 1

    assert attacker_successes == []
    assert owner_logins == 4
    assert owner_unlocks == 3  # the attack locked the account every time but the first
    assert owner_resets == 2
    verified_user.refresh_from_db()
    assert verified_user.check_password(password)
