"""Per-column statistics for a CSV document."""

import csv
import io
import math
from collections.abc import Iterator
from typing import Any

from rest_framework import serializers

from job_system.serializers import CharField
from jobs.handlers import register
from jobs.handlers.base import JobHandler, PermanentJobError, Progress

# Smaller documents are summarised in milliseconds; reporting progress would only cost writes.
PROGRESS_MIN_ROWS = 10_000
# The result has a summary of about 100 bytes per column: 240,000 one-character columns (under
# 1 MB of CSV) made a 19 MB result. The rows bound keeps a run to about a second.
MAX_COLUMNS = 1_000
MAX_ROWS = 100_000


class DocumentTooLarge(PermanentJobError):
    """The document has more columns or rows than a summary may cover."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class CsvSummaryParameters(serializers.Serializer):
    csv = serializers.CharField(
        max_length=1_000_000,
        # Whitespace may be part of the first or last cell, so it is left as sent.
        trim_whitespace=False,
        help_text=f"The CSV document, as text: at most {MAX_ROWS:,} rows (the header "
        f"included) of at most {MAX_COLUMNS:,} fields.",
    )
    delimiter = CharField(
        required=False,
        default=",",
        min_length=1,
        max_length=1,
        # Otherwise a tab delimiter would be trimmed away.
        trim_whitespace=False,
        help_text="The single character that separates fields.",
    )
    has_header = serializers.BooleanField(
        required=False,
        default=True,
        help_text="Whether the first row holds column names (else: column_1, column_2, …).",
    )

    def validate_csv(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The CSV document is empty.", code="blank")
        return value

    def validate_delimiter(self, value: str) -> str:
        # The csv module accepts these but then splits on quotes or line ends, never fields.
        if value in {'"', "\r", "\n"}:
            raise serializers.ValidationError(
                "The delimiter cannot be a quote or a line break.", code="invalid"
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Refused here, with a 400, rather than failing the job once it runs.
        try:
            for _row in _rows(attrs["csv"], attrs["delimiter"]):
                pass
        except DocumentTooLarge as error:
            raise serializers.ValidationError({"csv": [str(error)]}, code=error.code) from error
        except PermanentJobError:
            # Malformed: the job fails when it runs, with the parser's message, as it always
            # has; the parameters' JSON Schema cannot tell such a document from a good one.
            pass
        return attrs


@register
class CsvSummary(JobHandler):
    name = "csv_summary"
    description = "Summarise each column of a CSV document: counts, missing cells, ranges, means."
    Parameters = CsvSummaryParameters

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        rows = list(_rows(params["csv"], params["delimiter"]))
        if not rows:
            raise PermanentJobError("The CSV document has no rows.")
        header = rows.pop(0) if params["has_header"] else []
        width = max(len(row) for row in [header, *rows])
        columns = [_Column(_column_name(header, index)) for index in range(width)]
        report_every = len(rows) // 10 if len(rows) >= PROGRESS_MIN_ROWS else 0
        for number, row in enumerate(rows, start=1):
            # Only the cells a row has: looping over every column for each short row made a
            # wide header above many one-cell rows quadratic. A missing cell is counted below.
            for column, cell in zip(columns, row, strict=False):
                column.add(cell)
            if report_every and number % report_every == 0:
                progress(number * 100 // len(rows))
        return {"rows": len(rows), "columns": [column.summary(len(rows)) for column in columns]}


def _rows(text: str, delimiter: str) -> Iterator[list[str]]:
    """Yield the document's rows, skipping blank lines.

    A malformed document, or one past MAX_ROWS or MAX_COLUMNS, fails the job for good.
    """
    # strict, so a stray quote is an error rather than a silently misread cell.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    count = 0
    try:
        for row in reader:
            if not row:
                continue
            if len(row) > MAX_COLUMNS:
                raise DocumentTooLarge(
                    f"Line {reader.line_num} has {len(row):,} fields; a document may have at "
                    f"most {MAX_COLUMNS:,} columns.",
                    code="too_many_columns",
                )
            count += 1
            if count > MAX_ROWS:
                raise DocumentTooLarge(
                    f"The document has more than {MAX_ROWS:,} rows (the header included), "
                    "the most it may have. Split it.",
                    code="too_many_rows",
                )
            yield row
    except csv.Error as error:
        raise PermanentJobError(f"The CSV document is malformed: {error}.") from error


def _column_name(header: list[str], index: int) -> str:
    name = header[index].strip() if index < len(header) else ""
    return name or f"column_{index + 1}"


def _parse_number(cell: str) -> float | None:
    """Return the cell as a finite float, or None; "nan" and "inf" are words here, not numbers."""
    try:
        number = float(cell)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class _Column:
    def __init__(self, name: str) -> None:
        self.name = name
        self.values: list[str] = []

    def add(self, cell: str) -> None:
        if cell := cell.strip():
            self.values.append(cell)

    def summary(self, rows: int) -> dict[str, Any]:
        """Summarise the column of a document of `rows` rows; blank and absent cells are missing."""
        summary: dict[str, Any] = {
            "name": self.name,
            "count": len(self.values),
            "missing": rows - len(self.values),
        }
        numbers = [_parse_number(value) for value in self.values]
        if numbers and None not in numbers:
            finite = [number for number in numbers if number is not None]
            # Dividing first keeps the sum finite even for values near the float maximum.
            mean = math.fsum(number / len(finite) for number in finite)
            return summary | {
                "numeric": True,
                "min": min(finite),
                "max": max(finite),
                "mean": round(mean, 6),
            }
        return summary | {
            "numeric": False,
            "distinct": len(set(self.values)),
            "min": min(self.values, default=None),
            "max": max(self.values, default=None),
        }
