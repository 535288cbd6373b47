"""JSON Schema for a job type's parameters, derived from its DRF serializer.

`GET /api/job-types/` shows it, so a client can build a form or validate before submitting.
"""

from typing import Any

from rest_framework import serializers

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


def serializer_json_schema(serializer: serializers.Serializer) -> dict[str, Any]:
    properties = {name: field_json_schema(field) for name, field in serializer.fields.items()}
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
    if field.help_text:
        schema["description"] = str(field.help_text)
    if field.default is not serializers.empty and not callable(field.default):
        schema["default"] = field.default
    return schema
