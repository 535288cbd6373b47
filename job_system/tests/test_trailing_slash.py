"""A route without its trailing slash: never a 500, and a call with a body is never redirected."""

import pytest
from rest_framework.test import APIClient

from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_call_with_a_body_gets_a_json_404_naming_the_route(auth_client, settings, debug, method):
    settings.DEBUG = debug

    response = getattr(auth_client, method)("/api/jobs", {"name": "x"}, format="json")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "Not found. The route is /api/jobs/, with a slash at the end.",
        "code": "not_found",
    }
    assert not Job.objects.exists()


@pytest.mark.parametrize("debug", [False, True])
def test_logging_in_without_the_slash_names_the_route(settings, debug):
    settings.DEBUG = debug

    response = APIClient().post("/api/login", {"email": "a@example.com", "password": "x"})

    assert response.status_code == 404
    assert "/api/login/" in response.json()["detail"]


def test_a_get_without_the_slash_is_still_redirected(auth_client):
    response = auth_client.get("/api/jobs")

    assert response.status_code == 301
    assert response.headers["Location"] == "/api/jobs/"


def test_outside_the_api_django_still_redirects(client):
    response = client.post("/admin")

    assert response.status_code == 301
    assert response.headers["Location"] == "/admin/"
