"""The OpenAPI document says what the API does: every status it answers, every input it takes."""

import inspect
import json
import re
import sys

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from openapi_spec_validator import OpenAPIV30SpecValidator, validate
from rest_framework import serializers
from rest_framework.test import APIClient

from job_system.openapi import WHITESPACE, text_pattern
from job_system.serializers import FieldsBuiltOnceMixin, StrictTypesMixin
from jobs import handlers

METHODS = {"get", "post", "put", "patch", "delete"}
ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def component(schema: dict, ref: dict) -> dict:
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def error_schema(operation: dict, status: str) -> dict:
    return operation["responses"][status]["content"]["application/json"]["schema"]


def test_the_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", tmp_path / "api.yml")


def arrays_without_items(node, path: str = "#"):
    """Yield where a schema says `type: array` without the `items` OpenAPI 3.0 requires."""
    if isinstance(node, dict):
        if node.get("type") == "array" and "items" not in node:
            yield path
        for key, value in node.items():
            yield from arrays_without_items(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from arrays_without_items(value, f"{path}/{index}")


@pytest.mark.parametrize(("served_as", "parse"), [("json", json.loads), ("yaml", yaml.safe_load)])
def test_the_schema_as_served_is_valid_openapi_3_0_3(served_as, parse):
    response = APIClient().get("/api/schema/", {"format": served_as})
    document = parse(response.content)

    assert response.status_code == 200
    assert document["openapi"] == "3.0.3"
    validate(document, cls=OpenAPIV30SpecValidator)
    # A rule of the specification's text that openapi-spec-validator does not check; a Python
    # client generated without it left out echo's request model, and could not submit jobs.
    assert list(arrays_without_items(document)) == []


def test_no_component_is_described_by_a_mixins_docstring(schema):
    mixin_docs = [inspect.getdoc(mixin) for mixin in (StrictTypesMixin, FieldsBuiltOnceMixin)]

    assert [
        name
        for name, described in schema["components"]["schemas"].items()
        if described.get("description") in mixin_docs
    ] == []


def test_every_operation_behind_a_token_documents_401(schema):
    for name, operation in operations(schema):
        if {"jwtAuth": []} in operation.get("security", []):
            assert error_schema(operation, "401") == ERROR, name


def test_readmes_endpoint_table_lists_every_operation_but_the_deprecated_aliases(schema):
    readme = (settings.BASE_DIR / "README.md").read_text()
    table = re.search(r"^\| Endpoint \| What it does \|\n((?:\|.*\n)+)", readme, re.MULTILINE)
    listed = {
        endpoint
        for row in table[1].splitlines()
        for endpoint in re.findall(r"`([A-Z]+ /[^`]*)`", row.split("|")[1])
    }

    served = {name for name, operation in operations(schema) if not operation.get("deprecated")}
    assert served - listed == set()


def test_logout_is_documented_as_needing_only_the_refresh_token(schema):
    logout = schema["paths"]["/api/logout/"]["post"]
    body = logout["requestBody"]["content"]["application/json"]["schema"]

    assert logout["security"] == [{}]  # No bearer token.
    assert "401" not in logout["responses"]
    assert component(schema, body)["required"] == ["refresh"]


def test_every_job_operation_documents_403_for_unconfirmed_addresses(schema):
    for name, operation in operations(schema):
        if name.split()[1].startswith(("/api/jobs/", "/api/job-results/")):
            assert "email_not_verified" in operation["responses"]["403"]["description"], name


# Routes that take one of the caller's objects in the query, not the path.
OBJECT_IN_QUERY = {"GET /api/events/"}  # ?job=


def test_object_routes_document_404_and_nothing_else_does(schema):
    for name, operation in operations(schema):
        located = {parameter["in"] for parameter in operation.get("parameters", [])}
        if "path" in located or name in OBJECT_IN_QUERY:
            assert error_schema(operation, "404") == ERROR, name
        else:
            assert "404" not in operation["responses"], name


@pytest.mark.parametrize("path", ["/api/health/", "/api/health/ready/"])
def test_readiness_documents_its_503_with_the_same_body(schema, path):
    responses = schema["paths"][path]["get"]["responses"]

    assert responses["503"]["content"] == responses["200"]["content"]


def test_liveness_is_documented_as_always_200(schema):
    responses = schema["paths"]["/api/health/live/"]["get"]["responses"]

    assert set(responses) == {"200"}


def test_operations_with_a_body_document_400_413_and_415(schema):
    for name, operation in operations(schema):
        if "requestBody" in operation:
            assert set(operation["responses"]) >= {"400", "413", "415"}, name
            assert error_schema(operation, "400") == {
                "anyOf": [ERROR, {"$ref": "#/components/schemas/FieldErrors"}]
            }


def test_operations_with_query_parameters_document_400_and_414(schema):
    for name, operation in operations(schema):
        if any(parameter["in"] == "query" for parameter in operation.get("parameters", [])):
            assert set(operation["responses"]) >= {"400", "414"}, name
            # The web server's 414 is an HTML page, so no JSON body is promised.
            assert "content" not in operation["responses"]["414"]


def test_throttled_operations_document_429(schema):
    by_name = dict(operations(schema))
    for name in ["POST /api/jobs/", "POST /api/login/", "POST /api/register/"]:
        assert error_schema(by_name[name], "429") == ERROR, name
    assert "429" not in by_name["GET /api/jobs/"]["responses"]


def test_job_submission_is_described_per_job_type(schema):
    operation = schema["paths"]["/api/jobs/"]["post"]
    body = operation["requestBody"]
    variants = [
        component(schema, ref)
        for ref in component(schema, body["content"]["application/json"]["schema"])["oneOf"]
    ]

    assert body["required"] is True
    assert len(variants) == len(handlers.names())
    for handler, variant in zip(handlers.all_handlers(), variants, strict=True):
        properties = variant["properties"]
        job_type = properties["job_type"].get("allOf", [properties["job_type"]])[0]
        assert component(schema, job_type)["enum"] == [handler.name]
        assert properties["timeout_seconds"]["maximum"] == handler.timeout_seconds
        parameters = component(schema, properties["parameters"]["allOf"][0])
        assert parameters["additionalProperties"] is False
        assert ("job_type" in variant["required"]) == (handler.name != "echo")


def test_list_parameters_say_what_the_server_accepts(schema):
    parameters = {
        p["name"]: p["schema"] for p in schema["paths"]["/api/jobs/"]["get"]["parameters"]
    }

    assert parameters["job_type"]["enum"] == handlers.names()
    assert parameters["page_size"]["minimum"] == 1
    ordering = re.compile(parameters["ordering"]["pattern"])
    assert ordering.search("name,-created_at")
    assert not ordering.search("")
    assert not ordering.search("name,created_at,name")
    assert re.search(parameters["cursor"]["pattern"], "cD0yMDI2")


def test_a_new_password_is_described_by_the_password_validators(schema):
    password = component(schema, {"$ref": "#/components/schemas/RegisterRequest"})["properties"][
        "password"
    ]

    assert password["minLength"] == 12
    assert not re.search(password["pattern"], "123456789012")
    assert re.search(password["pattern"], "12345678901a")


def test_delete_is_documented_as_a_cancel_that_keeps_the_job(schema):
    delete = schema["paths"]["/api/jobs/{id}/"]["delete"]

    assert "does not delete" in delete["description"]
    assert delete["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobDetail"
    }


def test_request_text_fields_carry_the_pattern_charfield_applies(schema):
    login = component(schema, {"$ref": "#/components/schemas/LoginRequest"})["properties"]

    assert login["password"]["pattern"] == text_pattern(
        serializers.CharField(trim_whitespace=False)
    )


SAMPLES = ["a", " a ", "", " ", "\t\n", "\u3000", "\x1c", "\ufeff", "a\x00", "\x00", "é", "a\n"]


@pytest.mark.parametrize(
    "field",
    [
        serializers.CharField(),
        serializers.CharField(allow_blank=True),
        serializers.CharField(trim_whitespace=False),
    ],
    ids=["trimmed", "blank allowed", "untrimmed"],
)
@pytest.mark.parametrize("sample", SAMPLES)
def test_the_text_pattern_matches_exactly_what_charfield_accepts(field, sample):
    try:
        field.run_validation(sample)
        accepted = True
    except serializers.ValidationError:
        accepted = False

    assert bool(re.search(text_pattern(field), sample)) == accepted


def test_whitespace_is_what_str_strip_removes():
    spelled_out = re.compile(f"[{WHITESPACE}]")
    characters = map(chr, range(sys.maxunicode + 1))

    assert [c for c in characters if spelled_out.fullmatch(c)] == [
        c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()
    ]


def test_a_job_documents_why_it_waits_and_every_submission_takes_a_priority(schema):
    components = schema["components"]["schemas"]
    waiting_for = components["Job"]["properties"]["waiting_for"]

    assert waiting_for["nullable"] is True
    assert components["WaitingForEnum"]["enum"] == [
        "scheduled_time",
        "retry_backoff",
        "user_concurrency_limit",
        "type_concurrency_limit",
        "worker",
    ]
    # One request body per job type (the polymorphic JobCreateRequest is their union).
    requests = [
        name
        for name, component in components.items()
        if name.endswith("JobCreateRequest") and "properties" in component
    ]
    assert len(requests) == len(handlers.names())
    for name in requests:
        priority = components[name]["properties"]["priority"]
        assert (priority["minimum"], priority["maximum"], priority["default"]) == (0, 9, 5), name
