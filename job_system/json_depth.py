"""How deeply JSON may nest: one limit, MAX_JSON_DEPTH, for request bodies and stored values.

Python's json module decodes and encodes nested arrays and objects by recursion, so a body
of a thousand brackets (2 KB) raised RecursionError: a 500 with a traceback, from any JSON
endpoint, before login. A value nested a little less deep was stored, and then failed to
decode wherever the stack was already deep, such as the admin's pages. Bodies are measured
before they are decoded (job_system.parsers), and a job's parameters when validated; the
admin shows values stored before the limit from their text.
"""

import json
import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.db.models import Model, TextField
from django.db.models.functions import Cast
from rest_framework import serializers

# What is not structure: a string (even an unterminated one, so that every match attempt
# succeeds and the scan stays linear), which may hold brackets that do not count.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def text_nested_too_deeply(text: str) -> bool:
    """Return whether a JSON text nests arrays and objects deeper than MAX_JSON_DEPTH."""
    limit = settings.MAX_JSON_DEPTH
    # Most bodies have fewer brackets than the limit, and need no closer look.
    if text.count("[") + text.count("{") <= limit:
        return False
    # Strings out, then every byte but a bracket; the deepest point is the largest running
    # sum of +1 per opening and -1 per closing bracket. Each step runs in C.
    brackets = _STRING.sub("", text).encode().translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def value_nested_too_deeply(value: Any) -> bool:
    """Return whether a decoded JSON value nests lists and dicts deeper than MAX_JSON_DEPTH."""
    limit = settings.MAX_JSON_DEPTH
    # A stack rather than recursion: the value may be nested as deeply as it likes.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def limit_json_depth(value: Any) -> None:
    """Refuse a value nested deeper than MAX_JSON_DEPTH; a serializer field's validator."""
    if value_nested_too_deeply(value):
        raise serializers.ValidationError(
            f"Nested deeper than {settings.MAX_JSON_DEPTH} levels.", code="max_depth"
        )


def stored_json_for_display(instance: Model, field: str) -> str:
    """Show a JSON field as the admin does, from its stored text rather than its value.

    A value stored before nesting was limited may be too deep to decode this far down the
    stack (the admin's is deep): it is shown as the text it is stored as.
    """
    text = (
        type(instance)
        ._default_manager.filter(pk=instance.pk)
        .values_list(Cast(field, TextField()), flat=True)
        .get()
    )
    if text_nested_too_deeply(text):
        return text
    return json.dumps(json.loads(text), ensure_ascii=False)
