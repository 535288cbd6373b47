"""A request whose account is deleted while it runs gets 401, never a 500."""

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from jobs.models import Job
from users.authentication import recent_users
from users.models import CustomUser

# The foreign key to the owner is checked when the INSERT commits, which happens only outside
# a test's transaction.
pytestmark = pytest.mark.django_db(transaction=True)

SUBMISSIONS = [
    pytest.param("/api/jobs/", {"name": "x"}, id="single"),
    pytest.param("/api/jobs/bulk/", {"jobs": [{"name": "x"}, {"name": "y"}]}, id="bulk"),
]


def delete_elsewhere(user: CustomUser) -> None:
    """Delete the account as another web process would: this one's kept copy stays."""
    kept = CustomUser.objects.get(pk=user.pk)
    user.delete()
    recent_users.remember(str(kept.pk), kept)


@pytest.mark.parametrize(("path", "body"), SUBMISSIONS)
def test_a_user_deleted_while_their_token_is_kept_gets_401_and_is_forgotten(
    api_client, verified_user, path, body
):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(verified_user)}")
    assert api_client.get("/api/me/").status_code == 200  # Now kept by this process.
    delete_elsewhere(verified_user)

    response = api_client.post(path, body, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "User not found", "code": "user_not_found"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not Job.objects.exists()
    # The kept copy is gone: the next request is refused when it is authenticated.
    assert api_client.get("/api/me/").json()["code"] == "user_not_found"


@pytest.mark.parametrize(("path", "body"), SUBMISSIONS)
def test_a_user_deleted_after_authentication_gets_401(
    api_client, verified_user, path, body, settings
):
    settings.AUTH_USER_CACHE_SECONDS = 0
    # The row as authentication read it, just before the account was deleted.
    api_client.force_authenticate(CustomUser.objects.get(pk=verified_user.pk))
    verified_user.delete()

    response = api_client.post(path, body, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "user_not_found"
    assert not Job.objects.exists()
