"""What a newcomer meets first: the API index, and docs in order, with examples, all local.

scripts/tests/test_browser.py executes every example in Swagger UI and watches the docs'
requests in a real browser; these are the quick checks of the same promises.
"""

import json
import re
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import resolve
from rest_framework.test import APIClient

from job_system.openapi import ACCOUNT_FLOW, SAMPLE_EMAIL, SAMPLE_PASSWORD
from job_system.tests import test_openapi
from job_system.tests.test_openapi import operations

schema = test_openapi.schema  # The served schema, as a fixture for this module too.
SECTIONS = [
    "accounts",
    "jobs",
    "job-types",
    "job-results",
    "events",
    "webhooks",
    "schedules",
    "health",
    "index",
]


def request_examples(operation: dict) -> list:
    content = operation["requestBody"]["content"]["application/json"]
    return [example["value"] for example in content.get("examples", {}).values()]


def test_the_api_index_lists_entry_points_and_docs_by_absolute_url_without_login():
    client = APIClient()

    response = client.get("/api/")

    assert response.status_code == 200
    body = response.json()
    assert body["endpoints"]["jobs"] == "http://testserver/api/jobs/"
    assert body["docs"]["swagger_ui"] == "http://testserver/api/schema/swagger-ui/"
    for url in [*body["endpoints"].values(), *body["docs"].values()]:
        assert urlsplit(url).netloc == "testserver", url
        resolve(urlsplit(url).path)  # Raises for an address that has no route.
    for url in body["docs"].values():
        assert client.get(urlsplit(url).path).status_code == 200, url


def test_the_docs_list_their_sections_in_the_order_a_newcomer_uses_them(schema):
    assert [tag["name"] for tag in schema["tags"]] == SECTIONS
    for name, operation in operations(schema):
        assert set(operation["tags"]) <= set(SECTIONS), name


def test_the_account_routes_come_in_the_order_of_sign_up(schema):
    accounts = [name.split()[1] for name, op in operations(schema) if op["tags"] == ["accounts"]]

    assert accounts == ACCOUNT_FLOW


def test_every_operation_that_takes_a_body_offers_an_example(schema):
    for name, operation in operations(schema):
        if "requestBody" in operation:
            assert request_examples(operation), name


def test_the_job_example_swagger_ui_fills_in_is_an_echo_job_that_runs_now(schema):
    first = request_examples(schema["paths"]["/api/jobs/"]["post"])[0]

    assert first["job_type"] == "echo"
    assert "scheduled_time" not in first
    assert "max_retries" not in first


def test_signing_up_and_logging_in_use_readmes_sample_account(schema):
    sample = {"email": SAMPLE_EMAIL, "password": SAMPLE_PASSWORD}
    for path in ["/api/register/", "/api/login/"]:
        assert request_examples(schema["paths"][path]["post"]) == [sample]
    assert json.dumps(sample) in (settings.BASE_DIR / "README.md").read_text()


@pytest.mark.parametrize("path", ["/api/schema/swagger-ui/", "/api/schema/redoc/"])
def test_the_docs_pages_load_nothing_from_another_host(path):
    page = APIClient().get(path).content.decode()

    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links, page
    assert [link for link in links if urlsplit(link).netloc] == []


@pytest.mark.parametrize(
    "path", ["/api/schema/swagger-ui/", "/api/schema/redoc/", "/api/docs/", "/api/redoc/"]
)
def test_the_docs_pages_forbid_the_browser_to_fetch_from_another_host(path):
    """ReDoc draws its maker's logo from a CDN, in code no setting reaches: the policy stops it."""
    policy = APIClient().get(path)["Content-Security-Policy"]

    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    local = {"'self'", "'unsafe-inline'", "data:", "blob:", "'none'"}
    for directive, sources in directives.items():
        assert set(sources.split()) <= local, directive
