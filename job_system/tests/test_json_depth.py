"""JSON nested too deeply is refused before it is decoded, and is never stored."""

import json
import logging

import pytest
from django.conf import settings

from job_system.json_depth import text_nested_too_deeply
from jobs.models import Job
from jobs.serializers import JobCreateSerializer

pytestmark = pytest.mark.django_db


def arrays(depth: int) -> list:
    """A value `depth` lists deep."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("path", ["/api/login/", "/api/register/", "/api/token/refresh/"])
def test_a_deeply_nested_body_is_a_parse_error_even_before_login(api_client, path, caplog):
    body = "[" * 1000 + "]" * 1000  # 2 KB: this raised RecursionError, a 500.

    with caplog.at_level(logging.INFO):
        # An address of its own, so that no other test's requests count towards a throttle.
        response = api_client.generic(
            "POST", path, body, "application/json", REMOTE_ADDR="192.0.2.18"
        )

    assert response.status_code == 400
    assert response.json() == {
        "detail": f"JSON parse error - nested deeper than {settings.MAX_JSON_DEPTH} levels.",
        "code": "parse_error",
    }
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_job_nested_up_to_the_limit_is_accepted_and_one_level_more_is_not(auth_client):
    # The body is one object, `parameters` another, and `data` nests the rest.
    at_limit = arrays(settings.MAX_JSON_DEPTH - 2)
    over = arrays(settings.MAX_JSON_DEPTH - 1)

    accepted = auth_client.post(
        "/api/jobs/", {"name": "deep", "parameters": {"data": at_limit}}, format="json"
    )
    refused = auth_client.post(
        "/api/jobs/", {"name": "deeper", "parameters": {"data": over}}, format="json"
    )

    assert accepted.status_code == 201
    assert Job.objects.get().parameters["data"] == at_limit
    assert refused.status_code == 400
    assert refused.json()["code"] == "parse_error"


def test_brackets_inside_strings_do_not_count(auth_client):
    message = '[{"quoted \\" [[[' * 100

    response = auth_client.post(
        "/api/jobs/", {"name": "[" * 50, "parameters": {"message": message}}, format="json"
    )

    assert response.status_code == 201
    assert Job.objects.get().parameters["message"] == message


def test_an_unterminated_string_full_of_escaped_quotes_is_refused_as_invalid_json(auth_client):
    # Each quote could start a string that never ends: a scan that tried each one afresh
    # would take quadratic time on this body (hundreds of KB).
    body = "[" * 40 + '"' + '\\"' * 200_000

    response = auth_client.generic("POST", "/api/jobs/", body, "application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[]", 1),
        ('{"a": [{"b": []}]}', 4),
        ('["[[[[[[[[[[", "]]]]]]]]]]]]"]', 1),
        ('["\\\\", [[[]]]]', 4),  # An escaped backslash, then the string ends.
        ('["\\"[[[[[[[[[["]', 1),  # An escaped quote does not end the string.
        ("[" * 9 + "]" * 9, 9),
    ],
)
def test_depth_is_measured_outside_strings(text, depth, settings):
    settings.MAX_JSON_DEPTH = 8
    json.loads(text)  # Each is valid JSON.

    assert text_nested_too_deeply(text) is (depth > 8)


def test_stored_parameters_are_held_to_the_same_limit():
    too_deep = {"data": arrays(settings.MAX_JSON_DEPTH)}  # One level more, with `parameters`.

    serializer = JobCreateSerializer(data={"name": "x", "parameters": too_deep})

    assert not serializer.is_valid()
    [error] = serializer.errors["parameters"]
    assert error.code == "max_depth"
