"""Per-column statistics for a CSV document."""

import csv
import io
import math
from typing import Any

from rest_framework import serializers

from job_system.serializers import CharField
from jobs.handlers import register
from jobs.handlers.base import JobHandler, PermanentJobError, Progress

# Smaller documents are summarised in milliseconds; reporting progress would only cost writes.
PROGRESS_MIN_ROWS = 10_000


class CsvSummaryParameters(serializers.Serializer):
    csv = serializers.CharField(
        max_length=1_000_000,
        # Whitespace may be part of the first or last cell, so it is left as sent.
        trim_whitespace=False,
        help_text="The CSV document, as text.",
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


@register
class CsvSummary(JobHandler):
    name = "csv_summary"
    description = "Summarise each column of a CSV document: counts, missing cells, ranges, means."
    Parameters = CsvSummaryParameters

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        rows = _read_rows(params["csv"], params["delimiter"])
        header = rows.pop(0) if params["has_header"] else []
        width = max(len(row) for row in [header, *rows])
        columns = [_Column(_column_name(header, index)) for index in range(width)]
        report_every = len(rows) // 10 if len(rows) >= PROGRESS_MIN_ROWS else 0
        for number, row in enumerate(rows, start=1):
            for index, column in enumerate(columns):
                # A short (ragged) row is missing the cells it does not have.
                column.add(row[index] if index < len(row) else "")
            if report_every and number % report_every == 0:
                progress(number * 100 // len(rows))
        return {"rows": len(rows), "columns": [column.summary() for column in columns]}


def _read_rows(text: str, delimiter: str) -> list[list[str]]:
    """Parse the document, skipping blank lines; a malformed one fails the job for good."""
    try:
        # strict, so a stray quote is an error rather than a silently misread cell.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        rows = [row for row in reader if row]
    except csv.Error as error:
        raise PermanentJobError(f"The CSV document is malformed: {error}.") from error
    if not rows:
        raise PermanentJobError("The CSV document has no rows.")
    return rows


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
        self.missing = 0

    def add(self, cell: str) -> None:
        cell = cell.strip()
        if cell:
            self.values.append(cell)
        else:
            self.missing += 1

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "name": self.name,
            "count": len(self.values),
            "missing": self.missing,
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
