"""One stored form per mailbox (users.addresses): no second account by another spelling."""

import importlib
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.utils import timezone

from users.addresses import InvalidAddress, normalize_address
from users.models import CustomUser

FULLWIDTH_E = "\uff45"
ZERO_WIDTH_SPACE = "\u200b"
PASSWORD = "plum-orchard-lantern-93"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        (f"alice@{FULLWIDTH_E}xample.com", "alice@example.com"),
        (f"{FULLWIDTH_E}ve@example.com", "eve@example.com"),
        ("bob@b\u00fccher.de", "bob@xn--bcher-kva.de"),
        ("bob@B\u00dcCHER.de", "bob@xn--bcher-kva.de"),
        ("  carol@example.com ", "carol@example.com"),
    ],
)
def test_spellings_of_one_mailbox_normalise_to_one_address(typed, stored):
    assert normalize_address(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        f"alice@example.com{ZERO_WIDTH_SPACE}",
        f"ali{ZERO_WIDTH_SPACE}ce@example.com",
        "alice@exa\u00admple.com",  # soft hyphen
        "alice@example.com\u202e",  # right-to-left override
        "alice@[127.0.0.1]",
        "alice@[IPv6:::1]",
        "alice@localhost",
        "alice@intranet",
        "alice@example..com",
        "alice@" + "a" * 64 + ".com",
        "no-at-sign.example.com",
        "alice @example.com",
    ],
)
def test_addresses_that_do_not_survive_normalisation_are_refused(typed):
    with pytest.raises(InvalidAddress):
        normalize_address(typed)


@pytest.mark.django_db
def test_a_fullwidth_spelling_reaches_the_existing_account_not_a_new_one(post, mailoutbox):
    post("users:register", {"email": "alice@example.com", "password": PASSWORD})
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        again = post(
            "users:register", {"email": f"alice@{FULLWIDTH_E}xample.com", "password": PASSWORD}
        )

    assert again.status_code == 201
    assert list(CustomUser.objects.values_list("email", flat=True)) == ["alice@example.com"]
    assert {tuple(message.to) for message in mailoutbox} == {("alice@example.com",)}


@pytest.mark.django_db
def test_an_invisible_character_is_refused_with_a_field_error(post, mailoutbox):
    for route, data in [
        ("users:register", {"password": PASSWORD}),
        ("users:login", {"password": PASSWORD}),
        ("users:password-reset", {}),
    ]:
        address = f"alice@example.com{ZERO_WIDTH_SPACE}"
        response = post(route, {"email": address, **data})

        assert response.status_code == 400, route
        assert "invisible" in str(response.data["email"][0])
    assert not CustomUser.objects.exists()
    assert mailoutbox == []


@pytest.mark.django_db
def test_the_send_caps_count_every_spelling_of_an_address_together(post, mailoutbox, settings):
    settings.OTP_MAX_SENDS_PER_HOUR = 2
    start = timezone.now()
    spellings = ["alice@example.com", f"alice@{FULLWIDTH_E}xample.com", "ALICE@EXAMPLE.COM"]
    for minutes, spelling in enumerate(spellings):
        with time_machine.travel(start + timedelta(minutes=2 * minutes)):
            post("users:register", {"email": spelling, "password": PASSWORD})

    assert len(mailoutbox) == 2


@pytest.mark.django_db
def test_a_unicode_domain_logs_in_under_either_spelling(post, last_code):
    post("users:register", {"email": "bob@b\u00fccher.de", "password": PASSWORD})
    post("users:verify-otp", {"email": "bob@xn--bcher-kva.de", "otp": last_code()})

    response = post("users:login", {"email": "BOB@B\u00dcCHER.DE", "password": PASSWORD})

    assert response.status_code == 200


@pytest.mark.django_db
def test_the_migration_normalises_addresses_and_retires_variant_accounts():
    migration = importlib.import_module("users.migrations.0005_normalize_email_addresses")
    original = CustomUser.objects.create(email="alice@example.com")
    variant = CustomUser.objects.create(email=f"alice@{FULLWIDTH_E}xample.com")
    invisible = CustomUser.objects.create(email=f"alice@example.com{ZERO_WIDTH_SPACE}")
    lone = CustomUser.objects.create(email="bob@b\u00fccher.de")

    migration.normalize_addresses(apps, None)

    for user in (original, variant, invisible, lone):
        user.refresh_from_db()
    assert (original.is_active, original.email) == (True, "alice@example.com")
    assert (variant.is_active, invisible.is_active) == (False, False)
    assert (lone.is_active, lone.email) == (True, "bob@xn--bcher-kva.de")
