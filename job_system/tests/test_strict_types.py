"""Request bodies are taken with the JSON types the schema gives, never converted."""

import pytest
from django.urls import reverse

from jobs.models import Job

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"


def assert_invalid(response, *path: str) -> None:
    assert response.status_code == 400, response.data
    errors = response.data
    for key in path:
        errors = errors[key]
    assert [error.code for error in errors] == ["invalid"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 5),
        ("name", 1.5),
        ("description", False),
        ("max_retries", "3"),
        ("max_retries", 2.5),
        ("max_retries", True),
        ("timeout_seconds", "60"),
    ],
)
def test_a_job_field_of_the_wrong_json_type_is_refused(auth_client, field, value):
    response = auth_client.post(JOBS, {"name": "a job", field: value}, format="json")

    assert_invalid(response, field)
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("job_type", "parameters", "wrong"),
    [
        ("primes", {"limit": "100"}, "limit"),
        ("sleep", {"seconds": True}, "seconds"),
        ("sleep", {"seconds": "1.5"}, "seconds"),
        ("fail", {"retryable": "yes"}, "retryable"),
        ("word_count", {"text": 12345}, "text"),
    ],
)
def test_a_parameter_of_the_wrong_json_type_is_refused(auth_client, job_type, parameters, wrong):
    body = {"name": "a job", "job_type": job_type, "parameters": parameters}

    response = auth_client.post(JOBS, body, format="json")

    assert_invalid(response, "parameters", wrong)


def test_numbers_are_still_numbers(auth_client):
    body = {"name": "a job", "job_type": "sleep", "parameters": {"seconds": 1}, "max_retries": 2.0}

    response = auth_client.post(JOBS, body, format="json")

    assert response.status_code == 201
    assert response.data["parameters"] == {"seconds": 1.0}
    assert response.data["max_retries"] == 2


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("users:register", {"email": "a@example.com", "password": 123456789012345}, "password"),
        ("users:login", {"email": "a@example.com", "password": 123456789012}, "password"),
        ("users:verify-otp", {"email": "a@example.com", "otp": 123456}, "otp"),
        ("users:token-refresh", {"refresh": 5}, "refresh"),
    ],
)
def test_an_account_field_of_the_wrong_json_type_is_refused(api_client, route, body, field):
    response = api_client.post(reverse(route), body, format="json")

    assert_invalid(response, field)
