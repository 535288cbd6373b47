import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework_simplejwt.tokens import RefreshToken

from users import authentication
from users.models import CustomUser

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch, settings) -> Clock:
    settings.AUTH_USER_CACHE_SECONDS = 5
    clock = Clock()
    monkeypatch.setattr(authentication.recent_users, "_clock", clock)
    return clock


def get_me(api_client, user):
    token = RefreshToken.for_user(user).access_token
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(reverse("users:me"))
    return response, [q["sql"] for q in queries if CustomUser._meta.db_table in q["sql"]]


def test_a_user_is_read_once_then_kept_for_the_cache_time(api_client, verified_user, clock):
    first, first_reads = get_me(api_client, verified_user)
    clock.now += 4.9
    second, second_reads = get_me(api_client, verified_user)
    clock.now += 0.2
    third, third_reads = get_me(api_client, verified_user)

    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    assert [len(first_reads), len(second_reads), len(third_reads)] == [1, 0, 1]
    assert second.data["email"] == verified_user.email


def test_a_deactivation_by_another_process_stops_tokens_after_the_cache_time(
    api_client, verified_user, clock
):
    assert get_me(api_client, verified_user)[0].status_code == 200
    # An UPDATE sends no signal: to this process it is a change made somewhere else.
    CustomUser.objects.filter(pk=verified_user.pk).update(is_active=False)

    assert get_me(api_client, verified_user)[0].status_code == 200
    clock.now += 5
    response, _ = get_me(api_client, verified_user)
    assert response.status_code == 401
    assert response.data["code"] == "user_inactive"


def test_a_password_change_by_another_process_revokes_old_tokens_after_the_cache_time(
    api_client, verified_user, clock
):
    old_token = RefreshToken.for_user(verified_user).access_token
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {old_token}")
    assert api_client.get(reverse("users:me")).status_code == 200
    verified_user.set_password("a-new-password-elsewhere-91")
    CustomUser.objects.filter(pk=verified_user.pk).update(password=verified_user.password)

    assert api_client.get(reverse("users:me")).status_code == 200
    clock.now += 5
    response = api_client.get(reverse("users:me"))
    assert response.status_code == 401
    assert response.data["code"] == "password_changed"


def test_a_token_newer_than_the_kept_copy_reads_the_user_again(api_client, verified_user, clock):
    assert get_me(api_client, verified_user)[0].status_code == 200
    verified_user.set_password("a-new-password-elsewhere-91")
    CustomUser.objects.filter(pk=verified_user.pk).update(password=verified_user.password)

    # Issued for the new password: the kept copy has the old one, so the row is read again.
    response, reads = get_me(api_client, verified_user)

    assert response.status_code == 200
    assert len(reads) == 1


def test_a_change_saved_in_this_process_applies_at_once(api_client, verified_user, clock):
    assert get_me(api_client, verified_user)[0].status_code == 200
    verified_user.is_active = False
    verified_user.save(update_fields=["is_active"])

    response, _ = get_me(api_client, verified_user)

    assert response.status_code == 401


def test_zero_seconds_reads_the_user_on_every_request(api_client, verified_user, settings):
    settings.AUTH_USER_CACHE_SECONDS = 0

    reads = [len(get_me(api_client, verified_user)[1]) for _ in range(3)]

    assert reads == [1, 1, 1]


def test_requests_get_copies_so_one_cannot_change_anothers_user(verified_user, clock):
    authentication.recent_users.remember(str(verified_user.pk), verified_user)

    first = authentication.recent_users.get(str(verified_user.pk))
    first.email = "changed@example.com"

    assert authentication.recent_users.get(str(verified_user.pk)).email == verified_user.email


def test_the_oldest_users_are_dropped_beyond_the_limit(monkeypatch, user_factory, clock):
    monkeypatch.setattr(authentication, "MAX_REMEMBERED_USERS", 2)
    users = [user_factory() for _ in range(3)]

    for user in users:
        authentication.recent_users.remember(str(user.pk), user)

    kept = [authentication.recent_users.get(str(user.pk)) for user in users]
    assert [user is not None for user in kept] == [False, True, True]
