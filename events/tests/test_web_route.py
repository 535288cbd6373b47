"""GET /api/events/ on the web server: checked like the stream, answered with 421, documented."""

import json

import pytest
from rest_framework.test import APIClient

from events.tests.live import token_for

pytestmark = pytest.mark.django_db

EVENTS = "/api/events/"


@pytest.fixture
def auth_client(api_client, verified_user) -> APIClient:
    """A client with a real bearer token: the stream ends when the token expires."""
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(verified_user)}")
    return api_client


def test_the_web_server_checks_a_stream_request_then_names_the_events_process(auth_client):
    response = auth_client.get(EVENTS, {"after": 3})

    assert response.status_code == 421
    assert response.data["code"] == "misdirected_request"
    assert "events process" in response.data["detail"]


def test_the_web_server_refuses_what_the_events_process_would_refuse(auth_client, job_factory):
    theirs = job_factory()

    assert APIClient().get(EVENTS).status_code == 401
    assert auth_client.get(EVENTS, {"job": theirs.pk}).status_code == 404
    bad = auth_client.get(EVENTS, HTTP_LAST_EVENT_ID="soon")
    assert (bad.status_code, bad.data) == (400, {"Last-Event-ID": ["A valid integer is required."]})


def test_an_unconfirmed_address_gets_403_here_too(api_client, unverified_user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(unverified_user)}")

    assert api_client.get(EVENTS).data["code"] == "email_not_verified"


def test_the_stream_is_documented_with_its_parameters_and_answers():
    schema = json.loads(APIClient().get("/api/schema/", {"format": "json"}).content)
    operation = schema["paths"][EVENTS]["get"]

    assert operation["tags"] == ["events"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {(p["name"], p["in"]) for p in operation["parameters"]} == {
        ("job", "query"),
        ("after", "query"),
        ("Last-Event-ID", "header"),
    }
    assert set(operation["responses"]) >= {"400", "401", "403", "404", "421", "429", "503"}
