import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from scripts import pgcluster
from scripts.chaos_faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]


def chaos_database_arguments() -> list[str]:
    """The suite's database kind: a private PostgreSQL server (which the run restarts) when
    the suite runs on PostgreSQL, else SQLite."""
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        return []
    if not pgcluster.available():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) for a private server")
    return ["--postgres"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_fault_at_once_loses_no_job_runs_none_twice_and_leaves_none_stuck():
    # --quick: 300 jobs of every kind (quick, sleeping, scheduled, failing with retries,
    # cancelled, submitted twice after a client timeout) while every fault strikes once, with a
    # webhook receiver that fails 30% of requests; about 2 minutes on two cores.
    command = [sys.executable, "scripts/chaos.py", "--quick", "--deadline", "300"]
    completed = subprocess.run(  # noqa: S603 - our own command line.
        [*command, *chaos_database_arguments()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [line.split(": ", 1) for line in completed.stdout.splitlines() if ": " in line]
    figures = {name: value.split()[0] for name, value in lines}
    assert figures["accepted"] == "300"
    for figure in ("lost", "duplicated", "stuck", "inconsistent", "untracked"):
        assert figures[figure] == "0", figure
    assert figures["server_errors_outside_outages"] == "0"
    for fault in FAULTS:  # Each once, and worker kills twice.
        assert figures[f"fault_{fault}"] == ("2" if fault == "worker_kill" else "1"), fault
    assert int(figures["client_timeouts"]) > 0
    assert figures["told"] == figures["terminal"] == "300"
    assert figures["told_missing"] == "0"
    assert figures["callbacks_told"] == figures["callbacks"]
    assert figures["events_with_more_than_one_webhook_id"] == "0"
    assert figures["bad_signatures"] == "0"
    assert figures["wrong_status"] == "0"
