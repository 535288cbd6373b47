"""One login policy for /api/login/ and the admin's login page (users.login_policy)."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

WRONG = "not-the-password-at-all"
ATTACKER = "203.0.113.9"
OWNER = "198.51.100.4"


@pytest.fixture
def staff(user_factory):
    return user_factory(is_staff=True)


def admin_login(client: Client, email: str, password: str, ip: str = ATTACKER):
    return client.post(
        reverse("admin:login"), {"username": email, "password": password}, REMOTE_ADDR=ip
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def api_login(post, email: str, password: str, ip: str = ATTACKER):
    return post("users:login", {"email": email, "password": password}, REMOTE_ADDR=ip)


def test_the_admin_login_is_throttled_per_address(staff, password):
    client = Client()
    for _ in range(20):
        admin_login(client, staff.email, WRONG)

    throttled = admin_login(client, staff.email, password)

    assert b"Too many login attempts from your address" in throttled.content
    assert not logged_in(client)
    owner = Client()
    admin_login(owner, staff.email, password, ip=OWNER)
    assert logged_in(owner)


def test_the_admin_and_the_api_count_login_attempts_together(post, staff):
    for _ in range(20):
        admin_login(Client(), staff.email, WRONG)

    response = api_login(post, staff.email, WRONG)

    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1


def test_admin_wrong_passwords_count_and_lock_like_the_api(settings, staff, password):
    settings.LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(3):
        admin_login(client, staff.email, WRONG)

    staff.refresh_from_db()
    assert staff.failed_logins == 3
    assert staff.login_locked_at is not None
    admin_login(client, staff.email, password)
    assert not logged_in(client)


def test_an_account_the_api_locked_cannot_log_in_to_the_admin(post, settings, staff, password):
    settings.LOGIN_MAX_FAILURES = 3
    for _ in range(3):
        api_login(post, staff.email, WRONG)

    client = Client()
    admin_login(client, staff.email, password, ip=OWNER)

    assert not logged_in(client)


def test_a_steady_admin_password_attack_never_logs_in(
    staff, password, mailoutbox, django_capture_on_commit_callbacks, celery_eager
):
    """The review's attack: 300 wrong passwords for a staff account, then the right one."""
    start = timezone.now()
    client = Client()
    for attempt in range(300):
        # One every 4 s: under the address's rate, so every guess is checked.
        with (
            time_machine.travel(start + timedelta(seconds=4 * attempt)),
            django_capture_on_commit_callbacks(execute=True),
        ):
            admin_login(client, staff.email, f"guess-number-{attempt}")
    with time_machine.travel(start + timedelta(seconds=1200)):
        admin_login(client, staff.email, password)

    assert not logged_in(client)
    staff.refresh_from_db()
    assert staff.failed_logins == 300
    assert staff.login_locked_at is not None
    assert [message.to for message in mailoutbox] == [[staff.email]]


def test_the_api_login_past_the_rate_is_refused_before_the_password_is_checked(
    post, verified_user, password
):
    for _ in range(20):
        api_login(post, verified_user.email, WRONG)

    refused = api_login(post, verified_user.email, password)

    assert refused.status_code == 429
    verified_user.refresh_from_db()
    assert verified_user.failed_logins == 20
    assert api_login(post, verified_user.email, password, ip=OWNER).status_code == 200
