import hashlib
import json
import time
from typing import Any

import pytest
from rest_framework import serializers

from jobs import handlers
from jobs.handlers.base import JobInterrupted, PermanentJobError, Progress, RetryableJobError
from jobs.handlers.checksum import ALGORITHMS
from jobs.handlers.csv_summary import MAX_COLUMNS, MAX_ROWS


def validate(job_type: str, **data: Any) -> dict[str, Any]:
    parameters = handlers.get(job_type).Parameters(data=data)
    parameters.is_valid(raise_exception=True)
    return parameters.validated_data


def errors(job_type: str, **data: Any) -> dict[str, Any]:
    parameters = handlers.get(job_type).Parameters(data=data)
    assert not parameters.is_valid()
    return parameters.errors


def run(job_type: str, progress: Progress | None = None, **data: Any) -> dict[str, Any]:
    """Validate the parameters as the API would, then run the handler."""
    return handlers.get(job_type).run(validate(job_type, **data), progress or ignore_progress)


def ignore_progress(percent: int) -> None:
    pass


def interrupt(percent: int) -> None:
    raise JobInterrupted


# One representative job per type; a job of type "fail" has no output to round-trip.
SAMPLE_PARAMETERS = {
    "checksum": {"text": "héllo", "algorithm": "blake2b"},
    "csv_summary": {"csv": "a,b\n1,x\n2,\n3", "has_header": True},
    "echo": {"message": "hi", "data": {"nested": [1, 2.5, None, True]}},
    "primes": {"limit": 1000},
    "sleep": {"seconds": 0},
    "word_count": {"text": "One two two. Three!", "top": 2},
}


# The registry


def test_registry_lists_every_job_type():
    assert handlers.names() == [
        "checksum",
        "csv_summary",
        "echo",
        "fail",
        "primes",
        "sleep",
        "word_count",
    ]


def test_registry_raises_key_error_for_an_unknown_job_type():
    with pytest.raises(KeyError):
        handlers.get("nope")


@pytest.mark.parametrize("handler", handlers.all_handlers(), ids=lambda handler: handler.name)
def test_every_handler_describes_itself_and_documents_its_parameters(handler):
    assert handler.description.strip()
    assert issubclass(handler.Parameters, serializers.Serializer)
    for name, field in handler.Parameters().fields.items():
        assert field.help_text, f"{handler.name}.{name} has no help_text"


def test_every_job_type_that_returns_output_has_a_json_sample():
    assert set(SAMPLE_PARAMETERS) == set(handlers.names()) - {"fail"}


@pytest.mark.parametrize("job_type", sorted(SAMPLE_PARAMETERS))
def test_parameters_and_output_round_trip_through_json(job_type):
    params = validate(job_type, **SAMPLE_PARAMETERS[job_type])
    assert json.loads(json.dumps(params)) == params

    output = handlers.get(job_type).run(params, ignore_progress)

    assert json.loads(json.dumps(output, allow_nan=False)) == output


# word_count


def test_word_count_counts_characters_words_lines_and_sentences():
    output = run("word_count", text=" The cat sat. The dog didn't bark!\nDid it? yes ")

    assert output["characters"] == 47
    assert output["characters_no_spaces"] == 36
    assert output["words"] == 10
    assert output["unique_words"] == 9
    assert output["lines"] == 2
    assert output["sentences"] == 4
    assert output["average_word_length"] == 3.3


def test_word_count_reports_most_common_words_case_insensitively():
    output = run("word_count", text="b a B c A b", top=2)

    assert output["top_words"] == [["b", 3], ["a", 2]]


def test_word_count_breaks_ties_alphabetically():
    output = run("word_count", text="pear apple fig apple fig pear", top=3)

    assert output["top_words"] == [["apple", 2], ["fig", 2], ["pear", 2]]


def test_word_count_keeps_apostrophes_inside_words():
    output = run("word_count", text="Don't stop, O\u2019Brien.")

    assert output["words"] == 3
    assert [word for word, _ in output["top_words"]] == ["don't", "o\u2019brien", "stop"]


def test_word_count_of_empty_text_is_all_zeros():
    output = run("word_count", text="")

    assert output == {
        "characters": 0,
        "characters_no_spaces": 0,
        "words": 0,
        "unique_words": 0,
        "lines": 0,
        "sentences": 0,
        "average_word_length": 0.0,
        "top_words": [],
    }


# The timeout is generous: the old pattern backtracked through the run from each of its marks,
# which took minutes for 150,000 dots; now it takes milliseconds.
@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("." * 150_000 + "x", 1),
        ("Wait" + "?!" * 75_000 + "no", 1),
        ("So" + "." * 150_000 + " on", 2),
    ],
)
def test_word_count_reads_a_long_run_of_sentence_marks_in_one_pass(text, sentences):
    output = run("word_count", text=text)

    assert output["sentences"] == sentences
    assert output["characters"] == len(text)


def test_word_count_rejects_top_above_100():
    assert "top" in errors("word_count", text="hello", top=101)


def test_word_count_requires_text():
    assert "text" in errors("word_count")


# checksum


def test_checksum_defaults_to_sha256():
    output = run("checksum", text="abc")

    assert output == {
        "algorithm": "sha256",
        "hexdigest": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "bytes": 3,
    }


def test_checksum_computes_md5_for_legacy_clients():
    assert run("checksum", text="abc", algorithm="md5")["hexdigest"] == (
        "900150983cd24fb0d6963f7d28e17f72"
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_supports_every_listed_algorithm(algorithm):
    output = run("checksum", text="héllo", algorithm=algorithm)

    expected = hashlib.new(algorithm, "héllo".encode(), usedforsecurity=False).hexdigest()
    assert output["hexdigest"] == expected


def test_checksum_counts_utf8_bytes_not_characters():
    assert run("checksum", text="é€")["bytes"] == 5


def test_checksum_hashes_surrounding_whitespace():
    assert run("checksum", text=" abc\n")["hexdigest"] != run("checksum", text="abc")["hexdigest"]


def test_checksum_rejects_an_unknown_algorithm():
    assert "algorithm" in errors("checksum", text="abc", algorithm="crc32")


# csv_summary


def test_csv_summary_describes_numeric_and_text_columns():
    output = run("csv_summary", csv="name,age\nbob,31\nann,40.5\nbob,-2\n")

    assert output == {
        "rows": 3,
        "columns": [
            {
                "name": "name",
                "count": 3,
                "missing": 0,
                "numeric": False,
                "distinct": 2,
                "min": "ann",
                "max": "bob",
            },
            {
                "name": "age",
                "count": 3,
                "missing": 0,
                "numeric": True,
                "min": -2.0,
                "max": 40.5,
                "mean": 23.166667,
            },
        ],
    }


def test_csv_summary_counts_cells_missing_from_ragged_rows():
    output = run("csv_summary", csv="a,b,c\n1,2,3\n4\n5,,6,7\n")

    columns = {column["name"]: column for column in output["columns"]}
    assert output["rows"] == 3
    assert (columns["a"]["count"], columns["a"]["missing"]) == (3, 0)
    assert (columns["b"]["count"], columns["b"]["missing"]) == (1, 2)
    assert (columns["c"]["count"], columns["c"]["missing"]) == (2, 1)
    # The extra cell in the last row becomes an unnamed fourth column.
    assert (columns["column_4"]["count"], columns["column_4"]["missing"]) == (1, 2)


def test_csv_summary_names_columns_when_there_is_no_header():
    output = run("csv_summary", csv="1\tx\n3\ty", delimiter="\t", has_header=False)

    assert output["rows"] == 2
    assert [column["name"] for column in output["columns"]] == ["column_1", "column_2"]
    assert output["columns"][0]["mean"] == 2.0


def test_csv_summary_treats_nan_and_inf_as_text():
    output = run("csv_summary", csv="value\n1\nnan\ninf\n")

    assert output["columns"][0]["numeric"] is False
    assert output["columns"][0]["distinct"] == 3


def test_csv_summary_keeps_the_mean_finite_near_the_float_maximum():
    output = run("csv_summary", csv="big\n1e308\n1e308\n")

    assert output["columns"][0]["mean"] == 1e308


def test_csv_summary_of_a_header_without_rows_has_empty_columns():
    output = run("csv_summary", csv="a,b\n")

    assert output["rows"] == 0
    assert output["columns"][0] == {
        "name": "a",
        "count": 0,
        "missing": 0,
        "numeric": False,
        "distinct": 0,
        "min": None,
        "max": None,
    }


def test_csv_summary_fails_permanently_on_malformed_csv():
    with pytest.raises(PermanentJobError, match="malformed"):
        run("csv_summary", csv='a,b\n1,"2"3\n')


def submit_csv(client, csv: str):
    body = {"name": "csv", "job_type": "csv_summary", "parameters": {"csv": csv}}
    return client.post("/api/jobs/", body, format="json")


def test_csv_summary_refuses_more_columns_than_it_summarises(auth_client):
    # The document: under 1 MB of CSV that made a 19.4 MB result.
    wide = "x\n" + ",".join(["1"] * 240_000)

    response = submit_csv(auth_client, wide)

    assert response.status_code == 400
    assert response.json()["parameters"] == {
        "csv": ["Line 2 has 240,000 fields; a document may have at most 1,000 columns."]
    }
    assert errors("csv_summary", csv=wide)["csv"][0].code == "too_many_columns"


def test_csv_summary_refuses_more_rows_than_it_summarises(auth_client):
    tall = "n\n" + "1\n" * MAX_ROWS

    response = submit_csv(auth_client, tall)

    assert response.status_code == 400
    assert "more than 100,000 rows" in response.json()["parameters"]["csv"][0]
    assert errors("csv_summary", csv=tall)["csv"][0].code == "too_many_rows"


def test_csv_summary_accepts_a_document_at_its_bounds(auth_client):
    widest = ",".join(f"c{n}" for n in range(MAX_COLUMNS)) + "\n" + "1\n" * (MAX_ROWS - 1)

    assert submit_csv(auth_client, widest).status_code == 201


def test_csv_summary_refuses_a_document_past_its_bounds_when_it_runs():
    # Parameters stored before the bounds existed never went through them.
    params = {"csv": ",".join(["1"] * 1_001), "delimiter": ",", "has_header": False}

    with pytest.raises(PermanentJobError, match="at most 1,000 columns"):
        handlers.get("csv_summary").run(params, ignore_progress)


# Generous: the summary looped over every column for each short row, which took minutes here.
@pytest.mark.timeout(10)
def test_csv_summary_of_a_wide_header_above_short_rows_takes_one_pass():
    csv = ",".join(f"c{n}" for n in range(MAX_COLUMNS)) + "\n" + "1\n" * (MAX_ROWS - 1)

    output = run("csv_summary", csv=csv)

    first, *_, last = output["columns"]
    assert output["rows"] == MAX_ROWS - 1
    assert (first["count"], first["missing"]) == (MAX_ROWS - 1, 0)
    assert (last["name"], last["count"], last["missing"]) == ("c999", 0, MAX_ROWS - 1)


def test_csv_summary_fails_permanently_on_a_document_without_rows():
    params = {"csv": "\n\n", "delimiter": ",", "has_header": True}

    with pytest.raises(PermanentJobError, match="no rows"):
        handlers.get("csv_summary").run(params, ignore_progress)


@pytest.mark.parametrize("csv", ["", "  \n\n"])
def test_csv_summary_rejects_an_empty_document(csv):
    assert errors("csv_summary", csv=csv)["csv"][0].code == "blank"


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n"])
def test_csv_summary_rejects_a_delimiter_that_cannot_separate_fields(delimiter):
    assert "delimiter" in errors("csv_summary", csv="a;b", delimiter=delimiter)


def test_csv_summary_reports_progress_on_large_documents():
    reported: list[int] = []
    csv = "n\n" + "\n".join(str(number) for number in range(20_000))

    output = run("csv_summary", progress=reported.append, csv=csv)

    assert output["columns"][0]["max"] == 19_999.0
    assert reported == list(range(10, 101, 10))


# primes


def test_primes_up_to_100():
    output = run("primes", limit=100)

    assert output == {
        "limit": 100,
        "count": 25,
        "largest": 97,
        "first": [2, 3, 5, 7, 11, 13, 17, 19, 23, 29],
        "last": [53, 59, 61, 67, 71, 73, 79, 83, 89, 97],
    }


def test_primes_includes_a_prime_limit():
    output = run("primes", limit=2)

    assert (output["count"], output["largest"], output["first"]) == (1, 2, [2])


def test_primes_up_to_ten_million():
    output = run("primes", limit=10_000_000)

    assert output["count"] == 664_579
    assert output["largest"] == 9_999_991


def test_primes_reports_increasing_progress_up_to_100():
    reported: list[int] = []

    run("primes", progress=reported.append, limit=5_000_000)

    assert len(reported) > 10
    assert reported == sorted(set(reported))
    assert reported[-1] == 100


def test_primes_stops_when_interrupted():
    with pytest.raises(JobInterrupted):
        run("primes", progress=interrupt, limit=20_000_000)


@pytest.mark.parametrize("limit", [1, 20_000_001])
def test_primes_rejects_a_limit_out_of_range(limit):
    assert "limit" in errors("primes", limit=limit)


# sleep


def test_sleep_waits_for_the_given_seconds_and_reports_progress():
    reported: list[int] = []

    output = run("sleep", progress=reported.append, seconds=0.3)

    assert output["slept_seconds"] >= 0.3
    assert reported == sorted(reported)
    assert reported[-1] == 100


def test_sleep_of_zero_seconds_returns_at_once():
    assert run("sleep", progress=interrupt, seconds=0) == {"slept_seconds": 0.0}


def test_sleep_stops_promptly_when_interrupted():
    started = time.monotonic()

    with pytest.raises(JobInterrupted):
        run("sleep", progress=interrupt, seconds=30)

    assert time.monotonic() - started < 1


@pytest.mark.parametrize("seconds", [-1, 3601, "nan"])
def test_sleep_rejects_seconds_out_of_range(seconds):
    assert "seconds" in errors("sleep", seconds=seconds)


# fail


def test_fail_raises_a_permanent_error_by_default():
    with pytest.raises(PermanentJobError) as raised:
        run("fail")

    assert str(raised.value) == "This job failed on purpose."


def test_fail_raises_a_retryable_error_when_asked():
    with pytest.raises(RetryableJobError) as raised:
        run("fail", message="try again", retryable=True)

    assert str(raised.value) == "try again"


def test_fail_rejects_an_overlong_message():
    assert "message" in errors("fail", message="x" * 1001)
