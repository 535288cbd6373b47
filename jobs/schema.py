"""JSON Schema for a job type's parameters, derived from its DRF serializer.

`GET /api/job-types/` shows it, so a client can build a form or validate before submitting.
"""

from typing import Any

from rest_framework import serializers

from job_system.openapi import NON_BLANK_TEXT, text_pattern

_TYPES: list[tuple[type[serializers.Field], str]] = [
    (serializers.BooleanField, "boolean"),
    (serializers.IntegerField, "integer"),
    (serializers.FloatField, "number"),
    (serializers.DecimalField, "number"),
    (serializers.CharField, "string"),
    (serializers.DateTimeField, "string"),
    (serializers.ListField, "array"),
    (serializers.DictField, "object"),
]


# Rules that handlers check in validate_<field> methods, where no schema can read them;
# jobs/tests/test_schema.py holds each one to its handler.
CHECKED_IN_CODE: dict[tuple[str, str], dict[str, Any]] = {
    # Not only whitespace.
    ("CsvSummaryParameters", "csv"): {"pattern": NON_BLANK_TEXT},
    # Not a quote or a line break.
    ("CsvSummaryParameters", "delimiter"): {"pattern": r'^[^\u0000"\r\n]$'},
}


def serializer_json_schema(serializer: serializers.Serializer) -> dict[str, Any]:
    properties = {
        name: field_json_schema(field) | CHECKED_IN_CODE.get((type(serializer).__name__, name), {})
        for name, field in serializer.fields.items()
    }
    required = [name for name, field in serializer.fields.items() if field.required]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def field_json_schema(field: serializers.Field) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if isinstance(field, serializers.ChoiceField):
        schema["enum"] = list(field.choices)
    elif isinstance(field, serializers.JSONField) and not field.allow_null:
        # Any JSON value but null, which the field refuses. OpenAPI 3.0 requires `items`
        # beside `type: array`; `{}` lets an item be anything, as leaving it out does in JSON
        # Schema.
        schema["anyOf"] = [
            {"type": "object"},
            {"type": "array", "items": {}},
            {"type": "string"},
            {"type": "number"},
            {"type": "boolean"},
        ]
    else:
        for field_class, json_type in _TYPES:
            if isinstance(field, field_class):
                schema["type"] = json_type
                break
    for attribute, keyword in [
        ("max_length", "maxLength"),
        ("min_length", "minLength"),
        ("max_value", "maximum"),
        ("min_value", "minimum"),
    ]:
        value = getattr(field, attribute, None)
        if value is not None:
            schema[keyword] = value
    if isinstance(field, serializers.CharField):
        if not field.allow_blank:
            schema.setdefault("minLength", 1)
        schema["pattern"] = text_pattern(field)
    if field.help_text:
        schema["description"] = str(field.help_text)
    # A default of None for a field that refuses null describes no input.
    has_default = field.default is not serializers.empty and not callable(field.default)
    if has_default and (field.default is not None or field.allow_null):
        schema["default"] = field.default
    return schema
