"""FieldsBuiltOnceMixin: fields built once per class, and every serializer gets its own."""

from rest_framework import serializers

from job_system.serializers import FieldsBuiltOnceMixin


class Tag(serializers.Serializer):
    label = serializers.CharField()


class Example(FieldsBuiltOnceMixin, serializers.Serializer):
    name = serializers.CharField(max_length=5)
    tags = serializers.ListField(child=serializers.CharField())
    nested = Tag(required=False)


def test_each_serializer_binds_fields_of_its_own():
    first, second = Example(data={}), Example(data={})

    for name in ("name", "tags", "nested"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second
    # A field holding others is deep-copied: its child belongs to this serializer's copy.
    assert first.fields["tags"].child.parent is first.fields["tags"]
    assert first.fields["nested"].fields["label"] is not second.fields["nested"].fields["label"]


def test_fields_are_built_once_per_class_and_validate_as_declared():
    Example(data={}).fields  # noqa: B018 - builds them
    built = Example._built_fields

    valid = Example(data={"name": "abc", "tags": ["x"], "nested": {"label": "y"}})
    too_long = Example(data={"name": "abcdef", "tags": ["x"]})

    assert valid.is_valid(), valid.errors
    assert not too_long.is_valid()
    assert too_long.errors["name"][0].code == "max_length"
    assert Example._built_fields is built
