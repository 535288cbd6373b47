"""A job type's parameter schema accepts exactly what the API accepts for that type."""

import jsonschema
import pytest
from rest_framework.exceptions import ValidationError

from jobs import handlers
from jobs.schema import serializer_json_schema
from jobs.serializers import validate_parameters

# Parameters each type accepts, to which one value at a time is changed.
VALID = {
    "checksum": {"text": "abc"},
    "csv_summary": {"csv": "a,b\n1,2"},
    "echo": {},
    "fail": {},
    "primes": {"limit": 10},
    "sleep": {"seconds": 0},
    "word_count": {"text": "a b"},
}
VALUES = [
    None,
    True,
    0,
    1,
    -1,
    2.5,
    3.0,
    10**9,
    "",
    " ",
    "\n",
    "a",
    '"',
    "\r",
    ";",
    "a\x00",
    "10",
    [],
    {},
]


def accepted(job_type: str, parameters: dict) -> bool:
    try:
        validate_parameters(handlers.get(job_type).Parameters, parameters)
    except ValidationError:
        return False
    return True


def test_every_job_type_has_valid_sample_parameters():
    assert set(VALID) == set(handlers.names())
    for job_type, parameters in VALID.items():
        assert accepted(job_type, parameters), job_type


@pytest.mark.parametrize(
    ("job_type", "field"),
    [
        (handler.name, field)
        for handler in handlers.all_handlers()
        for field in handler.Parameters().fields
    ],
)
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_schema_of_each_parameter_agrees_with_its_validation(job_type, field, value):
    schema = serializer_json_schema(handlers.get(job_type).Parameters())
    parameters = {**VALID[job_type], field: value}

    assert jsonschema.Draft7Validator(schema).is_valid(parameters) == accepted(job_type, parameters)
