from datetime import timedelta

import jwt
import pytest
from django.urls import reverse
from rest_framework_simplejwt.tokens import RefreshToken

pytestmark = pytest.mark.django_db


def refresh_with(api_client, refresh: str):
    return api_client.post(reverse("users:token-refresh"), {"refresh": refresh})


def test_refresh_rotates_and_the_old_refresh_token_stops_working(api_client, verified_user):
    old = str(RefreshToken.for_user(verified_user))

    rotated = refresh_with(api_client, old)
    reused = refresh_with(api_client, old)

    assert rotated.status_code == 200
    assert set(rotated.data) == {"access", "refresh"}
    assert rotated.data["refresh"] != old
    assert reused.status_code == 401
    assert refresh_with(api_client, rotated.data["refresh"]).status_code == 200


def test_logout_revokes_the_refresh_token(api_client, bearer, verified_user):
    refresh = bearer(verified_user)

    response = api_client.post(reverse("users:logout"), {"refresh": refresh})

    assert response.status_code == 204
    assert refresh_with(api_client, refresh).status_code == 401


def test_logout_works_for_an_unverified_account(api_client, bearer, unverified_user):
    refresh = bearer(unverified_user)

    assert api_client.post(reverse("users:logout"), {"refresh": refresh}).status_code == 204


@pytest.mark.parametrize("sends_expired_access", [False, True])
def test_logout_needs_only_the_refresh_token(api_client, verified_user, sends_expired_access):
    refresh = RefreshToken.for_user(verified_user)
    if sends_expired_access:
        access = refresh.access_token
        access.set_exp(lifetime=-timedelta(minutes=1))
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")

    response = api_client.post(reverse("users:logout"), {"refresh": str(refresh)})

    assert response.status_code == 204
    assert refresh_with(api_client, str(refresh)).status_code == 401


@pytest.mark.parametrize("refresh", ["", "not-a-token", "revoked", "access"])
def test_logout_rejects_an_unusable_refresh_token_keyed_by_refresh(
    api_client, bearer, verified_user, refresh
):
    own = bearer(verified_user)
    if refresh == "revoked":
        RefreshToken(own).blacklist()
        refresh = own
    elif refresh == "access":
        refresh = str(RefreshToken.for_user(verified_user).access_token)

    response = api_client.post(reverse("users:logout"), {"refresh": refresh})

    assert response.status_code == 400
    assert set(response.data) == {"refresh"}


@pytest.mark.parametrize("verified", [True, False])
def test_me_shows_the_signed_in_account_verified_or_not(api_client, bearer, user_factory, verified):
    user = user_factory(is_verified=verified)
    bearer(user)

    response = api_client.get(reverse("users:me"))

    assert response.status_code == 200
    assert response.json() == {
        "id": user.id,
        "email": user.email,
        "is_verified": verified,
        "date_joined": user.date_joined.isoformat().replace("+00:00", "Z"),
    }


def test_me_requires_authentication(api_client):
    assert api_client.get(reverse("users:me")).status_code == 401


def test_login_issues_an_access_token_that_lives_at_most_fifteen_minutes(
    api_client, verified_user, password
):
    login = {"email": verified_user.email, "password": password}
    tokens = api_client.post(reverse("users:login"), login).data
    rotated = refresh_with(api_client, tokens["refresh"]).data

    for access in (tokens["access"], rotated["access"]):
        claims = jwt.decode(access, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= 15 * 60


def test_refresh_for_a_deleted_account_is_refused_with_401(api_client, user_factory):
    user = user_factory()
    refresh = str(RefreshToken.for_user(user))
    user.delete()

    response = refresh_with(api_client, refresh)

    assert response.status_code == 401
    assert response.json()["code"] == "no_active_account"


def test_refresh_for_a_deactivated_account_is_refused_with_401(api_client, user_factory):
    user = user_factory()
    refresh = str(RefreshToken.for_user(user))
    user.is_active = False
    user.save()

    assert refresh_with(api_client, refresh).status_code == 401


def test_a_password_set_outside_the_api_revokes_access_and_refresh_tokens(
    api_client, bearer, verified_user
):
    refresh = bearer(verified_user)
    # As the admin or `manage.py changepassword` would: nothing blacklists the tokens.
    verified_user.set_password("a-brand-new-passphrase-7")
    verified_user.save()

    me = api_client.get(reverse("users:me"))
    refreshed = refresh_with(api_client, refresh)

    assert me.status_code == 401
    assert me.json()["code"] == "password_changed"
    assert refreshed.status_code == 401
    assert refreshed.json()["code"] == "password_changed"
