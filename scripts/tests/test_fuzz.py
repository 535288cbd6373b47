import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.fuzz import failure_figures

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("server_errors", "schema_violations", "accepted_invalid", "other_failures")


def test_failures_are_counted_by_figure_from_the_json_report(tmp_path):
    report = tmp_path / "report.json"
    failures = [("ST101", 2), ("ST103", 3), ("ST108", 1), ("ST201", 4), ("ST202", 5)]
    report.write_text(
        json.dumps({"failures": [{"code": code, "count": count} for code, count in failures]})
    )

    assert failure_figures(report) == {
        "server_errors": 2,
        "schema_violations": 4,
        "accepted_invalid": 4,
        "other_failures": 5,
    }


def test_a_run_without_a_report_counts_as_unknown(tmp_path):
    assert set(failure_figures(tmp_path / "missing.json").values()) == {-1}


@pytest.mark.integration
def test_a_short_fuzz_run_finds_no_server_error_schema_violation_or_accepted_invalid_input():
    # The schema-driven checks of `make fuzz` on a small budget: about 2 minutes.
    completed = subprocess.run(
        [sys.executable, "scripts/fuzz.py", "--max-examples", "5", "--max-time", "120"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )

    assert completed.returncode == 0, completed.stdout[-20_000:] + completed.stderr[-5_000:]
    lines = [line.split(": ", 1) for line in completed.stdout.splitlines()]
    figures = {line[0]: line[1] for line in lines if line[0] in FIGURES}
    assert figures == dict.fromkeys(FIGURES, "0")
