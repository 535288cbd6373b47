import pytest
from django.contrib.auth.hashers import MD5PasswordHasher, get_hasher
from django.urls import reverse

pytestmark = pytest.mark.django_db

INVALID_CREDENTIALS = {"detail": "Invalid email or password.", "code": "invalid_credentials"}


def login(api_client, email: str, password: str):
    return api_client.post(reverse("users:login"), {"email": email, "password": password})


class CountingHasher(MD5PasswordHasher):
    """A real (fast) hasher that counts the passwords it hashes, verifying included."""

    def __init__(self) -> None:
        self.hashed = 0

    def encode(self, password: str, salt: str) -> str:
        self.hashed += 1
        return super().encode(password, salt)


@pytest.fixture
def counting_hasher(settings) -> CountingHasher:
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    return get_hasher()


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


def test_login_hashes_the_password_for_unknown_addresses_as_for_known_ones(
    api_client, verified_user, counting_hasher
):
    hashed = []
    for email in ("nobody@example.com", verified_user.email):
        before = counting_hasher.hashed
        assert login(api_client, email, "not-the-password-at-all").status_code == 401
        hashed.append(counting_hasher.hashed - before)

    assert hashed == [1, 1]


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
