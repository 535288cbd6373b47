"""The OpenAPI document's shared parts: every error an operation can answer, and text rules.

drf-spectacular documents what a view declares. The errors DRF, simplejwt and our middleware
give on their own (no token, an unknown id, a body too large, a throttle) are added here, from
what each view is configured with, so that the document lists every status a client can get.
"""

from typing import Any

from django.conf import settings
from drf_spectacular import openapi
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.drainage import get_override
from drf_spectacular.plumbing import (
    ResolvedComponent,
    alpha_operation_sorter,
    force_instance,
    get_lib_doc_excludes,
)
from drf_spectacular.utils import OpenApiExample, PolymorphicProxySerializer
from rest_framework import serializers

from job_system.serializers import FieldsBuiltOnceMixin, StrictTypesMixin
from users.permissions import IsVerified

# The characters str.strip() removes (str.isspace()), which CharField trims before checking
# that a value is not blank. Spelled out because ECMA's \s is a slightly different set.
WHITESPACE = (
    r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
    r"\u205f\u3000"
)
# DRF's CharField refuses the NUL character in every string...
TEXT = r"^[^\u0000]*$"
# ...and, unless blank is allowed, an empty one, or one empty once trimmed if it trims.
NON_EMPTY_TEXT = r"^[^\u0000]+$"
NON_BLANK_TEXT = rf"^[^\u0000]*[^\u0000{WHITESPACE}][^\u0000]*$"


# Swagger UI and ReDoc list a section's operations in the schema's order: the account routes
# as a newcomer uses them (then unlocking a locked login, and the old verify-email route last),
# everything else by path.
ACCOUNT_FLOW = [
    "/api/register/",
    "/api/verify-otp/",
    "/api/resend-otp/",
    "/api/login/",
    "/api/token/refresh/",
    "/api/logout/",
    "/api/me/",
    "/api/password/change/",
    "/api/password/reset/",
    "/api/password/reset/confirm/",
    "/api/login/unlock/",
    "/api/verify-email/",
]

# The account of README's walk-through. Every account example in the docs uses it, so that
# executing them in order in Swagger UI works from sign-up on.
SAMPLE_EMAIL = "ada@example.com"
SAMPLE_PASSWORD = "correct horse battery"  # noqa: S105 - a documented sample, not a secret.


def operation_order(endpoint: tuple) -> tuple:
    """Sort key for drf-spectacular's endpoints: ACCOUNT_FLOW first, the rest by path."""
    path = endpoint[0]
    flow_position = ACCOUNT_FLOW.index(path) if path in ACCOUNT_FLOW else len(ACCOUNT_FLOW)
    return flow_position, alpha_operation_sorter(endpoint)


def request_example(summary: str, value: dict[str, Any], description: str = "") -> OpenApiExample:
    """Return a request body example, which Swagger UI puts in the body it pre-fills."""
    return OpenApiExample(summary, value=value, description=description, request_only=True)


class RecentUsersJWTScheme(SimpleJWTScheme):
    """Our JWTAuthentication is simplejwt's, with a user cache: the same bearer scheme."""

    target_class = "users.authentication.JWTAuthentication"


def docstrings_not_for_clients() -> list[type]:
    """Return the classes whose docstrings never describe a component: DRF's, and our mixins'.

    A mixin's docstring tells developers what it does to every serializer that uses it; as the
    description of each of those components it told API users "Build a serializer's fields
    once per class".
    """
    return [*get_lib_doc_excludes(), FieldsBuiltOnceMixin, StrictTypesMixin]


def text_pattern(field: serializers.CharField) -> str:
    """Return the regular expression a string must match for a CharField to accept it.

    Its length limits are left to minLength and maxLength.
    """
    if field.allow_blank:
        return TEXT
    return NON_BLANK_TEXT if field.trim_whitespace else NON_EMPTY_TEXT


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": 'Messages keyed by the field they are about, e.g. `{"name": ["This field '
    'is required."]}`; a nested field nests (`{"parameters": {"seconds": [...]}}`).',
    "additionalProperties": {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"$ref": "#/components/schemas/FieldErrors"},
        ]
    },
}


ERRORS = {
    "400": "Invalid input, keyed by field or query parameter; a body that is not JSON, or "
    f"that nests deeper than {settings.MAX_JSON_DEPTH} levels, gets `detail` and `code` "
    "`parse_error`.",
    "401": "No valid bearer token: `not_authenticated` when there is none, `token_not_valid` "
    "when it is malformed or expired, `user_not_found` when its account was deleted.",
    "403": "`email_not_verified`: confirm your email address first.",
    "404": "`not_found`: there is no such object of yours.",
    "413": f"`request_too_large`: the body is over {settings.MAX_REQUEST_BODY_BYTES} bytes.",
    "414": "The web server refuses a URL this long (over about 4 KB), with an HTML page.",
    "415": "`unsupported_media_type`: send `Content-Type: application/json`.",
    "429": "`throttled`: too many requests; retry after `Retry-After` seconds.",
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the error responses every operation can give."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for status, description in self._error_responses(operation).items():
            responses.setdefault(status, {"description": description})
        for status, response in responses.items():
            # 414 comes from the web server in front of Django, as an HTML page.
            if status.startswith("4") and status != "414" and "content" not in response:
                response["content"] = {"application/json": {"schema": self._error_schema(status)}}
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        serializer = force_instance(serializer)
        if isinstance(serializer, PolymorphicProxySerializer):
            # drf-spectacular looks for required fields on the oneOf, which has none of its own.
            variants = [force_instance(variant) for variant in serializer.serializers]
            required = all(
                any(field.required for field in variant.fields.values()) for variant in variants
            )
        return schema, required

    def _get_serializer_field_meta(self, field, direction):
        meta = super()._get_serializer_field_meta(field, direction)
        # A minLength stated with @extend_schema_field beats the 1 that says "not blank".
        override = get_override(field, "field")
        if isinstance(override, dict) and "minLength" in override:
            meta.pop("minLength", None)
        return meta

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction != "request":
            return schema
        for field in force_instance(serializer).fields.values():
            field_schema = schema["properties"].get(field.field_name, {})
            if (
                isinstance(field, serializers.CharField)
                and field_schema.get("type") == "string"
                and not {"format", "pattern", "enum"} & set(field_schema)
            ):
                field_schema["pattern"] = text_pattern(field)
        return schema

    def _error_responses(self, operation: dict[str, Any]) -> dict[str, str]:
        """Describe the errors this view can give whatever it declares, by status."""
        located = {parameter["in"] for parameter in operation.get("parameters", [])}
        has_body = "requestBody" in operation
        can_happen = {
            "400": has_body or bool(located & {"query", "header"}),
            "401": bool(self.view.get_authenticators()),
            "403": any(isinstance(rule, IsVerified) for rule in self.view.get_permissions()),
            "404": "path" in located,
            "413": has_body,
            "414": "query" in located,
            "415": has_body,
            "429": bool(self.view.get_throttles()),
        }
        return {status: ERRORS[status] for status, given in can_happen.items() if given}

    def _error_schema(self, status: str) -> dict[str, Any]:
        error = self.resolve_serializer(ErrorSerializer, "response").ref
        if status != "400":
            return error
        field_errors = ResolvedComponent(
            name="FieldErrors",
            type=ResolvedComponent.SCHEMA,
            schema=FIELD_ERRORS_SCHEMA,
            object="FieldErrors",
        )
        self.registry.register_on_missing(field_errors)
        return {"anyOf": [error, field_errors.ref]}
