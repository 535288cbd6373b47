import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

INVALID_CREDENTIALS = {"detail": "Invalid email or password.", "code": "invalid_credentials"}


def login(api_client, email: str, password: str):
    return api_client.post(reverse("users:login"), {"email": email, "password": password})


def test_login_returns_a_token_pair_that_opens_the_api(api_client, verified_user, password):
    response = login(api_client, verified_user.email, password)

    assert response.status_code == 200
    assert set(response.data) == {"access", "refresh"}
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.data['access']}")
    assert api_client.get(reverse("users:me")).data["email"] == verified_user.email


def test_login_ignores_the_case_of_the_address(api_client, verified_user, password):
    assert login(api_client, verified_user.email.upper(), password).status_code == 200


def test_login_records_the_time(api_client, verified_user, password):
    login(api_client, verified_user.email, password)

    verified_user.refresh_from_db()
    assert verified_user.last_login is not None


def test_login_rejects_a_wrong_password_with_401(api_client, verified_user):
    response = login(api_client, verified_user.email, "not-the-password-at-all")

    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_login_answers_an_unknown_address_like_a_wrong_password(api_client, verified_user):
    unknown = login(api_client, "nobody@example.com", "not-the-password-at-all")
    wrong = login(api_client, verified_user.email, "not-the-password-at-all")

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == INVALID_CREDENTIALS


def test_login_answers_an_inactive_account_like_a_wrong_password(
    api_client, user_factory, password
):
    user = user_factory(is_active=False)

    response = login(api_client, user.email, password)

    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS


def test_login_refuses_an_unverified_account_with_403(api_client, unverified_user, password):
    response = login(api_client, unverified_user.email, password)

    assert response.status_code == 403
    assert response.json()["code"] == "email_not_verified"


def test_login_tells_an_unverified_account_nothing_without_the_password(
    api_client, unverified_user
):
    response = login(api_client, unverified_user.email, "not-the-password-at-all")

    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS


def test_login_ignores_a_stale_bearer_token(api_client, verified_user, password):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    assert login(api_client, verified_user.email, password).status_code == 200
