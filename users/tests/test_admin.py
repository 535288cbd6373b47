import pytest
from django.urls import reverse

from users.models import CustomUser, EmailCode

pytestmark = pytest.mark.django_db


def test_admin_adds_a_user_with_email_and_password(admin_client):
    response = admin_client.post(
        reverse("admin:users_customuser_add"),
        {
            "email": "New.Person@Example.com",
            "usable_password": "true",
            "password1": "plum-orchard-lantern-93",
            "password2": "plum-orchard-lantern-93",
        },
    )

    assert response.status_code == 302
    user = CustomUser.objects.get(email="new.person@example.com")
    assert user.check_password("plum-orchard-lantern-93")
    assert not user.is_verified


def test_admin_refuses_an_address_taken_in_another_case(admin_client, verified_user):
    response = admin_client.post(
        reverse("admin:users_customuser_add"),
        {"email": verified_user.email.upper(), "usable_password": "false"},
    )

    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors


def test_admin_finds_users_by_email(admin_client, user_factory):
    wanted = user_factory(email="wanted@example.com")
    user_factory(email="other@example.com")

    response = admin_client.get(reverse("admin:users_customuser_changelist"), {"q": "wanted"})

    assert list(response.context["cl"].result_list) == [wanted]


def test_admin_shows_codes_read_only_without_the_hash(admin_client, issue_code, unverified_user):
    issue_code(unverified_user)
    row = EmailCode.objects.get()

    page = admin_client.get(reverse("admin:users_emailcode_change", args=[row.pk]))

    assert page.status_code == 200
    assert row.code_hash not in page.content.decode()
    assert "code_hash" not in page.content.decode()
    assert admin_client.get(reverse("admin:users_emailcode_add")).status_code == 403
    assert admin_client.get(reverse("admin:users_emailcode_changelist")).status_code == 200


def test_admin_opens_a_users_change_page(admin_client, verified_user):
    page = admin_client.get(reverse("admin:users_customuser_change", args=[verified_user.pk]))

    assert page.status_code == 200


def change_user(admin_client, user, **changes):
    """Post the user's change form as the admin shows it, with `changes`."""
    url = reverse("admin:users_customuser_change", args=[user.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and name not in ("password", "groups", "user_permissions")
    }
    data.update(changes)
    return admin_client.post(url, {k: v for k, v in data.items() if v is not False})


def test_staff_set_a_users_job_limit_and_share_in_the_admin(admin_client, verified_user):
    response = change_user(admin_client, verified_user, max_running_jobs=3, fair_share_weight=2)

    assert response.status_code == 302, response.context["adminform"].form.errors
    verified_user.refresh_from_db()
    assert (verified_user.max_running_jobs, verified_user.fair_share_weight) == (3, 2)


@pytest.mark.parametrize("weight", [0, 101])
def test_the_admin_refuses_a_share_outside_1_to_100(admin_client, verified_user, weight):
    response = change_user(admin_client, verified_user, fair_share_weight=weight)

    assert response.status_code == 200
    assert "fair_share_weight" in response.context["adminform"].form.errors
