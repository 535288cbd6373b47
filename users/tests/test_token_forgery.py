"""Access tokens that were forged, altered or outlived their time never open the API."""

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import time_machine
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

pytestmark = pytest.mark.django_db


def me(api_client, token: str):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api_client.get(reverse("users:me"))


def claims_of(user) -> dict:
    """The claims of a genuine access token for `user`."""
    return dict(AccessToken.for_user(user).payload)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict, *, key: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key or settings.SIMPLE_JWT["SIGNING_KEY"], algorithm=algorithm)


def test_a_genuine_token_opens_the_api(api_client, verified_user):
    assert me(api_client, signed(claims_of(verified_user))).status_code == 200


def test_a_token_with_alg_none_is_refused(api_client, verified_user):
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_of(verified_user)).encode())

    assert me(api_client, f"{header}.{payload}.").status_code == 401


# PyJWT warns that the test key is short for SHA-512; the key is not what is being tested.
@pytest.mark.filterwarnings("ignore:The HMAC key is")
def test_a_token_signed_with_another_algorithm_is_refused(api_client, verified_user):
    token = signed(claims_of(verified_user), algorithm="HS512")

    assert me(api_client, token).status_code == 401


def test_a_token_signed_with_another_key_is_refused(api_client, verified_user):
    token = signed(claims_of(verified_user), key="not-the-signing-key-" + "x" * 32)

    assert me(api_client, token).status_code == 401


def test_a_token_whose_claims_were_edited_is_refused(api_client, verified_user, user_factory):
    header, _, signature = str(AccessToken.for_user(verified_user)).split(".")
    claims = claims_of(verified_user)
    claims["user_id"] = str(user_factory().pk)

    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"

    assert me(api_client, tampered).status_code == 401


def test_a_token_without_an_expiry_is_refused(api_client, verified_user):
    claims = claims_of(verified_user)
    del claims["exp"]

    assert me(api_client, signed(claims)).status_code == 401


def test_a_token_not_valid_before_a_later_time_is_refused(api_client, verified_user):
    claims = claims_of(verified_user)
    claims["nbf"] = int((timezone.now() + timedelta(minutes=5)).timestamp())

    assert me(api_client, signed(claims)).status_code == 401


def test_an_access_token_works_until_it_expires_and_not_after(api_client, verified_user):
    token = AccessToken.for_user(verified_user)
    # From the token's own claims: `exp` is whole seconds, and a clock read beside the token
    # could be a second or more after it on a loaded machine.
    assert token["exp"] - token["iat"] == 15 * 60
    expires = datetime.fromtimestamp(token["exp"], UTC)

    with time_machine.travel(expires - timedelta(seconds=1), tick=False):
        assert me(api_client, str(token)).status_code == 200
    with time_machine.travel(expires + timedelta(seconds=1), tick=False):
        assert me(api_client, str(token)).status_code == 401
