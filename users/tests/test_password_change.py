import pytest
from django.urls import reverse
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "quiet-meadow-compass-58"


def refresh_with(refresh: str):
    return APIClient().post(reverse("users:token-refresh"), {"refresh": refresh})


def change(post, old: str, new: str = NEW_PASSWORD):
    return post("users:password-change", {"old_password": old, "new_password": new})


@pytest.mark.parametrize("verified", [True, False])
def test_password_change_sets_the_new_password_and_returns_a_fresh_token_pair(
    api_client, post, bearer, user_factory, password, verified
):
    user = user_factory(is_verified=verified)
    bearer(user)

    response = change(post, password)

    assert response.status_code == 200
    assert set(response.data) == {"access", "refresh"}
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.data['access']}")
    assert api_client.get(reverse("users:me")).status_code == 200
    assert refresh_with(response.data["refresh"]).status_code == 200


def test_password_change_signs_out_every_session(api_client, post, bearer, verified_user, password):
    other_session = bearer(verified_user)
    this_session = bearer(verified_user)

    assert change(post, password).status_code == 200

    assert refresh_with(other_session).status_code == 401
    assert refresh_with(this_session).status_code == 401
    # The access token this request was made with is revoked as well.
    assert api_client.get(reverse("users:me")).status_code == 401


def test_password_change_blacklists_every_outstanding_refresh_token(
    post, bearer, verified_user, user_factory, password
):
    bearer(verified_user)
    bearer(verified_user)
    bystander = user_factory()
    bearer(bystander)
    bearer(verified_user)

    tokens = change(post, password).data

    mine = OutstandingToken.objects.filter(user=verified_user)
    assert {token.token for token in mine.filter(blacklistedtoken__isnull=True)} == {
        tokens["refresh"]
    }
    assert mine.filter(blacklistedtoken__isnull=False).count() == 3
    assert not OutstandingToken.objects.filter(user=bystander, blacklistedtoken__isnull=False)


def test_password_change_emails_the_owner(post, bearer, verified_user, password, mailoutbox):
    bearer(verified_user)

    change(post, password)

    [message] = mailoutbox
    assert message.to == [verified_user.email]
    assert message.subject == "Your password was changed"


def test_password_change_rejects_a_wrong_old_password_keyed_by_old_password(
    post, bearer, verified_user, password, mailoutbox
):
    refresh = bearer(verified_user)

    response = change(post, "not-the-password-at-all")

    assert response.status_code == 400
    assert set(response.data) == {"old_password"}
    assert response.data["old_password"][0].code == "password_incorrect"
    verified_user.refresh_from_db()
    assert verified_user.check_password(password)
    assert mailoutbox == []
    assert refresh_with(refresh).status_code == 200


@pytest.mark.parametrize(
    ("new_password", "code"),
    [
        ("short-9", "password_too_short"),
        ("password1234", "password_too_common"),
        ("381946205718", "password_entirely_numeric"),
        ("adalovelace1", "password_too_similar"),
    ],
)
def test_password_change_rejects_a_weak_new_password_keyed_by_new_password(
    post, bearer, user_factory, password, new_password, code
):
    user = user_factory(email="ada.lovelace@example.com")
    bearer(user)

    response = change(post, password, new_password)

    assert response.status_code == 400
    assert set(response.data) == {"new_password"}
    assert code in [error.code for error in response.data["new_password"]]
    user.refresh_from_db()
    assert user.check_password(password)


def test_password_change_reports_both_passwords_at_once(post, bearer, verified_user):
    bearer(verified_user)

    response = change(post, "not-the-password-at-all", "short-9")

    assert set(response.data) == {"old_password", "new_password"}


def test_password_change_requires_authentication(post, password):
    assert change(post, password).status_code == 401


def test_password_change_is_throttled_like_login(post, bearer, verified_user):
    bearer(verified_user)
    allowed, _ = ScopedRateThrottle().parse_rate(api_settings.DEFAULT_THROTTLE_RATES["login"])
    for _ in range(allowed):
        assert change(post, "not-the-password-at-all").status_code == 400

    assert change(post, "not-the-password-at-all").status_code == 429
