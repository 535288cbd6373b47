import pytest

from users.models import CustomUser

pytestmark = pytest.mark.django_db

INVALID_CREDENTIALS = {"detail": "Invalid email or password.", "code": "invalid_credentials"}
WRONG = "not-the-password-at-all"
LOCKED_SUBJECT = "Logging in to your account is locked"


@pytest.fixture(autouse=True)
def three_failures_lock(settings) -> None:
    settings.LOGIN_MAX_FAILURES = 3


def login(post, email: str, password: str):
    return post("users:login", {"email": email, "password": password})


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


def test_a_lock_emails_the_owner_once(post, mailoutbox, verified_user, user_factory):
    bystander = user_factory()
    for _ in range(5):
        login(post, verified_user.email.upper(), WRONG)
    login(post, bystander.email, WRONG)

    assert [(m.to, m.subject) for m in mailoutbox] == [([verified_user.email], LOCKED_SUBJECT)]
    assert "reset your password" in mailoutbox[0].body


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
