"""What the API says in its error messages reads as English: articles and plurals agree."""

import json

import pytest

pytestmark = pytest.mark.django_db


def refusal(response, *path: str) -> tuple[str, str]:
    """Return the one message at `path` in a 400's body, and its code."""
    assert response.status_code == 400
    errors = response.data
    for key in path:
        errors = errors[key]
    (error,) = errors
    return str(error), error.code


@pytest.mark.parametrize(
    ("job_type", "timeout", "message"),
    [
        ("echo", 61, "An echo job may run for at most 60 seconds."),
        ("primes", 121, "A primes job may run for at most 120 seconds."),
    ],
)
def test_a_timeout_over_the_types_limit_is_refused_with_the_right_article(
    auth_client, job_type, timeout, message
):
    parameters = {"limit": 10} if job_type == "primes" else {}
    response = auth_client.post(
        "/api/jobs/",
        {"name": "x", "job_type": job_type, "parameters": parameters, "timeout_seconds": timeout},
    )

    assert refusal(response, "timeout_seconds") == (message, "max_value")


def test_the_schema_describes_each_job_type_with_the_right_article(api_client):
    schema = json.loads(api_client.get("/api/schema/", {"format": "json"}).content)
    descriptions = schema["components"]["schemas"]

    assert descriptions["EchoJobCreateRequest"]["description"].startswith("An echo job to submit.")
    assert descriptions["SleepJobCreateRequest"]["description"].startswith("A sleep job to submit.")


def test_an_empty_bulk_request_asks_for_at_least_1_element(auth_client):
    response = auth_client.post("/api/jobs/bulk/", {"jobs": []})

    assert refusal(response, "jobs") == ("Ensure this field has at least 1 element.", "min_length")


def test_a_bulk_request_over_the_limit_counts_elements_in_the_plural(auth_client):
    response = auth_client.post("/api/jobs/bulk/", {"jobs": [{"name": "x"}] * 501})

    assert refusal(response, "jobs") == (
        "Ensure this field has no more than 500 elements.",
        "max_length",
    )


def test_a_delimiter_of_two_characters_is_refused_in_the_singular(auth_client):
    response = auth_client.post(
        "/api/jobs/",
        {"name": "x", "job_type": "csv_summary", "parameters": {"csv": "a", "delimiter": ";;"}},
    )

    assert refusal(response, "parameters", "delimiter") == (
        "Ensure this field has no more than 1 character.",
        "max_length",
    )
