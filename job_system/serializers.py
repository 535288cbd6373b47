"""What every serializer that reads a request body shares: JSON types are taken as sent.

DRF converts on the way in: `"name": 5` becomes "5", `"max_retries": "3"` becomes 3 and
`"retryable": "yes"` becomes True. The schema promises a string, an integer and a boolean, so
those are refused by field, with DRF's own message and code `invalid`.

Also here: fields whose length messages agree with their limit, and the article for a noun.
"""

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

# The JSON values each kind of field takes; the first class a field is an instance of wins.
JSON_TYPES: list[tuple[type[serializers.Field], tuple[type, ...]]] = [
    (serializers.BooleanField, (bool,)),
    (serializers.IntegerField, (int,)),
    (serializers.FloatField, (int, float)),
    (serializers.CharField, (str,)),
]


def json_type_errors(
    serializer: serializers.Serializer, data: Mapping[str, Any]
) -> dict[str, list[ErrorDetail]]:
    """Return an `invalid` error for each field whose value in `data` is of another JSON type."""
    return {
        name: [ErrorDetail(field.error_messages["invalid"], code="invalid")]
        for name, field in serializer.fields.items()
        if not field.read_only and name in data and not _takes(field, data[name])
    }


def _takes(field: serializers.Field, value: Any) -> bool:
    if value is None:
        return True  # The field's allow_null decides.
    if isinstance(field, serializers.IntegerField) and isinstance(value, float):
        return value.is_integer()  # JSON Schema's integer: 3.0 is one.
    for field_class, json_types in JSON_TYPES:
        if isinstance(field, field_class):
            # JSON's true and false are not numbers, though Python's bool is an int.
            return isinstance(value, json_types) and (
                bool in json_types or not isinstance(value, bool)
            )
    return True


class StrictTypesMixin:
    """Refuse a value of the wrong JSON type instead of converting it."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping) and (errors := json_type_errors(self, data)):
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class FieldsBuiltOnceMixin:
    """Build a serializer's fields once per class, and give each instance shallow copies.

    DRF builds a ModelSerializer's fields again for each instance, and deep-copies a plain
    Serializer's declared ones, which runs every field's __init__ again: together 180 of the
    305 us it took to validate a submission and render its answer. A field that is not bound
    yet holds nothing that binding changes, so a shallow copy is as good as a new one; fields
    that hold other fields or serializers (a ListField's child, a nested serializer) are bound
    to them, so they are deep-copied as DRF does.
    """

    def get_fields(self):
        cls = type(self)
        if "_built_fields" not in cls.__dict__:
            # Two threads may both build them the first time; either result is the same.
            cls._built_fields = super().get_fields()
        return {
            name: copy.deepcopy(field) if _holds_fields(field) else copy.copy(field)
            for name, field in cls._built_fields.items()
        }


def _holds_fields(field: serializers.Field) -> bool:
    return isinstance(field, serializers.BaseSerializer) or any(
        hasattr(field, attribute) for attribute in ("child", "child_relation")
    )


class CountedLengthMixin:
    """Say "at least 1 element", where DRF says "at least 1 elements"."""

    # The unit of length, singular and plural.
    unit: ClassVar[tuple[str, str]]
    LENGTH_MESSAGES: ClassVar[dict[str, str]] = {
        "min_length": "Ensure this field has at least {count} {unit}.",
        "max_length": "Ensure this field has no more than {count} {unit}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        counted = {
            key: message.format(count=kwargs[key], unit=self.unit[kwargs[key] != 1])
            for key, message in self.LENGTH_MESSAGES.items()
            if kwargs.get(key) is not None
        }
        kwargs["error_messages"] = counted | kwargs.get("error_messages", {})
        super().__init__(**kwargs)


class CharField(CountedLengthMixin, serializers.CharField):
    unit = ("character", "characters")


class ListField(CountedLengthMixin, serializers.ListField):
    unit = ("element", "elements")


def indefinite_article(word: str) -> str:
    """Return "an" before a word that starts with a vowel letter, else "a": "an echo job".

    The first letter stands for the first sound, which holds for the job types' names.
    """
    return "an" if word[:1].lower() in {"a", "e", "i", "o", "u"} else "a"
