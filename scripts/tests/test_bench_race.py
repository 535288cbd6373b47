import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scripts.bench_race import Overlap, overlap_sweep
from scripts.stack import drop_postgres_database

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_intervals_that_only_touch_do_not_overlap():
    # One claim ends at 2 s and the next starts at 2 s: the slot was handed on, not shared.
    intervals = [(at(0), at(2)), (at(2), at(4)), (at(4), at(6))]

    assert overlap_sweep(intervals, limit=1) == Overlap(most_at_once=1, starts_over_limit=0)


def test_a_claim_that_starts_a_microsecond_early_is_counted():
    intervals = [(at(0), at(2)), (at(2) - timedelta(microseconds=1), at(4))]

    assert overlap_sweep(intervals, limit=1) == Overlap(most_at_once=2, starts_over_limit=1)


def test_each_start_beyond_the_limit_is_one_violation():
    # Up to 3 at once between 1 s and 2 s, and again between 5 s and 6 s; at most 2 otherwise.
    intervals = [
        (at(0), at(3)),
        (at(0.5), at(6)),
        (at(1), at(2)),  # third at once: a violation
        (at(4), at(5)),
        (at(5), at(7)),  # touches the one before: two at once, no violation
        (at(5.5), at(8)),  # third at once with (0.5, 6) and (5, 7): a violation
    ]

    assert overlap_sweep(intervals, limit=2) == Overlap(most_at_once=3, starts_over_limit=2)


def test_a_claim_still_running_stays_open_to_the_end():
    intervals = [(at(0), None), (at(10), at(11))]

    assert overlap_sweep(intervals, limit=1) == Overlap(most_at_once=2, starts_over_limit=1)


def test_no_claims_no_overlap():
    assert overlap_sweep([], limit=2) == Overlap(most_at_once=0, starts_over_limit=0)


def race_database_url() -> str | None:
    """Under `make test-postgres`, a database of the race's own beside the test database."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return None
    name = os.environ.get("DATABASE_TEST_NAME", "test_jobsys")
    return f"{url.rsplit('/', 1)[0]}/{name}_race"


@pytest.mark.integration
@pytest.mark.slow
def test_concurrency_limits_hold_when_four_workers_race_2000_claims():
    database_url = race_database_url()
    command = [sys.executable, "scripts/bench_race.py", "--claims", "2000"]
    if database_url:
        command += ["--database-url", database_url]
    try:
        completed = subprocess.run(  # noqa: S603 - our own script
            command, cwd=ROOT, capture_output=True, text=True, timeout=240
        )
    finally:
        if database_url:
            drop_postgres_database(database_url)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [line.split(": ", 1) for line in completed.stdout.splitlines() if ": " in line]
    figures = {name: value.split()[0] for name, value in lines}
    assert figures["race_claims"] == "2000"
    assert figures["limit violations"] == "0"
    # The race proves something only if the limits were reached: each user's queue is deep,
    # so every user must have run as many jobs at once as its limit allows, and primes 2.
    assert figures["race_user1_most_at_once"] == "2"
    assert figures["race_user2_most_at_once"] == "2"
    assert figures["race_user3_most_at_once"] == "2"
    assert figures["race_user4_most_at_once"] == "1"
    assert figures["race_type_primes_most_at_once"] == "2"
