import re
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from users.models import CustomUser, EmailCode

pytestmark = pytest.mark.django_db

STRONG_PASSWORD = "plum-orchard-lantern-93"


def test_register_creates_an_unverified_account_and_emails_a_code(post, mailoutbox):
    response = post("users:register", {"email": "ada@example.com", "password": STRONG_PASSWORD})

    assert response.status_code == 201
    assert response.data["email"] == "ada@example.com"
    user = CustomUser.objects.get(email="ada@example.com")
    assert not user.is_verified
    assert user.check_password(STRONG_PASSWORD)
    [message] = mailoutbox
    assert message.to == ["ada@example.com"]
    assert message.subject == "Your confirmation code"
    assert re.search(r"^\d{6}$", message.body, re.MULTILINE)
    assert "expires in 10 minutes" in message.body


def test_register_stores_the_address_in_lowercase(post):
    post("users:register", {"email": "  Ada@Example.COM ", "password": STRONG_PASSWORD})

    assert CustomUser.objects.filter(email="ada@example.com").exists()


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short-9", "password_too_short"),
        ("password1234", "password_too_common"),
        ("381946205718", "password_entirely_numeric"),
        ("adalovelace1", "password_too_similar"),
    ],
)
def test_register_rejects_a_weak_password_keyed_by_password(post, mailoutbox, password, code):
    response = post("users:register", {"email": "ada.lovelace@example.com", "password": password})

    assert response.status_code == 400
    assert set(response.data) == {"password"}
    assert code in [error.code for error in response.data["password"]]
    assert not CustomUser.objects.exists()
    assert mailoutbox == []


def test_register_with_a_taken_address_answers_the_same_and_warns_the_owner(
    post, mailoutbox, verified_user, password
):
    fresh = post("users:register", {"email": "new@example.com", "password": STRONG_PASSWORD})
    taken = post(
        "users:register", {"email": verified_user.email.upper(), "password": STRONG_PASSWORD}
    )

    assert taken.status_code == fresh.status_code == 201
    assert taken.data == {**fresh.data, "email": verified_user.email}
    warning = mailoutbox[-1]
    assert warning.to == [verified_user.email]
    assert "tried to create an account" in warning.body
    assert not re.search(r"\d{6}", warning.body)
    verified_user.refresh_from_db()
    assert verified_user.check_password(password)
    assert not verified_user.email_codes.exists()


def test_register_with_a_taken_address_warns_the_owner_at_most_once_an_hour(
    post, mailoutbox, verified_user
):
    data = {"email": verified_user.email, "password": STRONG_PASSWORD}
    start = timezone.now()
    responses = [post("users:register", data), post("users:register", data)]
    with time_machine.travel(start + timedelta(minutes=59)):
        responses.append(post("users:register", data))
    with time_machine.travel(start + timedelta(minutes=61)):
        responses.append(post("users:register", data))

    assert [response.status_code for response in responses] == [201] * 4
    assert len({str(response.json()) for response in responses}) == 1
    assert len(mailoutbox) == 2


def test_register_again_while_unverified_sends_a_code_for_the_new_sign_up(post, mailoutbox):
    first = {"email": "ada@example.com", "password": STRONG_PASSWORD}
    post("users:register", first)
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        response = post("users:register", {**first, "password": "another-long-password-7"})

    assert response.status_code == 201
    assert len(mailoutbox) == 2
    user = CustomUser.objects.get(email="ada@example.com")
    # Each sign-up's code stays open; the newest sign-up's password answers logins meanwhile.
    assert EmailCode.objects.filter(user=user, revoked_at=None).count() == 2
    assert user.check_password("another-long-password-7")


def test_register_refuses_an_address_that_normalisation_cannot_keep(post, mailoutbox):
    for address in ["alice@example.com\u200b", "alice@[127.0.0.1]", "alice@localhost"]:
        response = post("users:register", {"email": address, "password": STRONG_PASSWORD})

        assert response.status_code == 400, address
        assert set(response.data) == {"email"}
    assert not CustomUser.objects.exists()
    assert mailoutbox == []


def test_register_stores_a_fullwidth_spelling_as_the_plain_address(post, verified_user, mailoutbox):
    local, domain = verified_user.email.split("@")
    fullwidth = f"{local}@\uff45{domain[1:]}" if domain.startswith("e") else None
    assert fullwidth, "the factory's addresses are at example.com"

    response = post("users:register", {"email": fullwidth, "password": STRONG_PASSWORD})

    assert response.status_code == 201
    assert response.data["email"] == verified_user.email
    assert CustomUser.objects.count() == 1
    # The owner is warned, as for any sign-up with their address; no second account exists.
    assert [message.to for message in mailoutbox] == [[verified_user.email]]


def test_register_again_within_the_cooldown_sends_nothing_more(post, mailoutbox):
    data = {"email": "ada@example.com", "password": STRONG_PASSWORD}
    post("users:register", data)
    response = post("users:register", data)

    assert response.status_code == 201
    assert len(mailoutbox) == 1


def test_register_ignores_a_stale_bearer_token(api_client, post):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    response = post("users:register", {"email": "ada@example.com", "password": STRONG_PASSWORD})

    assert response.status_code == 201
