from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from users.models import CustomUser

pytestmark = pytest.mark.django_db

INVALID_CREDENTIALS = {"detail": "Invalid email or password.", "code": "invalid_credentials"}
WRONG = "not-the-password-at-all"
UNLOCK_SUBJECT = "Your code to unlock logging in"


@pytest.fixture(autouse=True)
def three_failures_lock(settings) -> None:
    settings.LOGIN_MAX_FAILURES = 3


def login(post, email: str, password: str, **fields):
    return post("users:login", {"email": email, "password": password, **fields})


def lock(post, user) -> None:
    for _ in range(3):
        login(post, user.email, WRONG)


def test_wrong_passwords_are_counted_and_the_right_one_resets_the_count(
    post, verified_user, password
):
    login(post, verified_user.email, WRONG)
    login(post, verified_user.email, WRONG)
    verified_user.refresh_from_db()
    assert verified_user.failed_logins == 2

    assert login(post, verified_user.email, password).status_code == 200

    verified_user.refresh_from_db()
    assert verified_user.failed_logins == 0
    assert verified_user.login_locked_at is None


def test_too_many_wrong_passwords_in_a_row_lock_out_the_right_one(post, verified_user, password):
    for _ in range(3):
        login(post, verified_user.email, WRONG)

    response = login(post, verified_user.email, password)

    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS
    verified_user.refresh_from_db()
    assert verified_user.login_locked_at is not None


def test_a_lock_emails_the_owner_an_unlock_code_once(
    post, mailoutbox, last_code, verified_user, user_factory
):
    bystander = user_factory()
    for _ in range(5):
        login(post, verified_user.email.upper(), WRONG)
    login(post, bystander.email, WRONG)

    assert [(m.to, m.subject) for m in mailoutbox] == [([verified_user.email], UNLOCK_SUBJECT)]
    assert len(last_code().replace("-", "")) == 16
    assert "unlock_code" in mailoutbox[0].body


def test_the_right_password_with_the_unlock_code_logs_in_and_unlocks(
    post, last_code, verified_user, password
):
    lock(post, verified_user)
    code = last_code()

    response = login(post, verified_user.email, password, unlock_code=code)

    assert response.status_code == 200
    verified_user.refresh_from_db()
    assert (verified_user.failed_logins, verified_user.login_locked_at) == (0, None)
    assert login(post, verified_user.email, password).status_code == 200


def test_an_unlock_code_works_once(post, last_code, verified_user, password):
    lock(post, verified_user)
    code = last_code()
    login(post, verified_user.email, password, unlock_code=code)
    lock(post, verified_user)

    assert login(post, verified_user.email, password, unlock_code=code).status_code == 401


def test_wrong_passwords_with_the_unlock_code_leave_it_working(
    post, last_code, verified_user, password
):
    lock(post, verified_user)
    code = last_code()
    for _ in range(10):
        assert login(post, verified_user.email, WRONG, unlock_code=code).status_code == 401

    assert login(post, verified_user.email, password, unlock_code=code).status_code == 200


def test_a_wrong_unlock_code_with_the_right_password_answers_like_a_wrong_password(
    post, verified_user, password
):
    lock(post, verified_user)

    response = login(post, verified_user.email, password, unlock_code="0123-4567-89AB-CDEF")

    assert (response.status_code, response.json()) == (401, INVALID_CREDENTIALS)


def test_the_owner_can_ask_for_an_unlock_code_which_is_not_resent_while_open(
    post, mailoutbox, last_code, verified_user, password, user_factory
):
    unlocked = user_factory()
    lock(post, verified_user)
    mailoutbox.clear()

    answers = [
        post("users:login-unlock", {"email": address})
        for address in (verified_user.email, "nobody@example.com", unlocked.email)
    ]
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        again = post("users:login-unlock", {"email": verified_user.email})
        code = last_code()

    assert {(a.status_code, str(a.json())) for a in [*answers, again]} == {
        (202, str(answers[0].json()))
    }
    # The lock's own email was still open at first: only the request after it expired sent.
    assert [m.to for m in mailoutbox] == [[verified_user.email]]
    assert login(post, verified_user.email, password, unlock_code=code).status_code == 200


def test_a_locked_account_answers_like_an_unknown_address(post, verified_user):
    for _ in range(3):
        login(post, verified_user.email, WRONG)

    locked = login(post, verified_user.email, WRONG)
    unknown = login(post, "nobody@example.com", WRONG)

    assert (locked.status_code, locked.json()) == (unknown.status_code, unknown.json())


def test_unknown_addresses_lock_nothing(post, mailoutbox):
    for _ in range(4):
        login(post, "nobody@example.com", WRONG)

    assert not CustomUser.objects.exists()
    assert mailoutbox == []


def test_a_password_reset_unlocks_the_account(post, last_code, verified_user):
    for _ in range(3):
        login(post, verified_user.email, WRONG)
    post("users:password-reset", {"email": verified_user.email})
    new_password = "quiet-meadow-compass-58"
    reset = post(
        "users:password-reset-confirm",
        {"email": verified_user.email, "otp": last_code(), "new_password": new_password},
    )
    assert reset.status_code == 200

    assert login(post, verified_user.email, new_password).status_code == 200
    verified_user.refresh_from_db()
    assert (verified_user.failed_logins, verified_user.login_locked_at) == (0, None)


def test_staff_unlock_an_account_by_clearing_its_lock(post, verified_user, password):
    for _ in range(3):
        login(post, verified_user.email, WRONG)

    CustomUser.objects.filter(pk=verified_user.pk).update(login_locked_at=None)

    assert login(post, verified_user.email, password).status_code == 200
