"""Indexes on the busy tables are built without blocking their writes on PostgreSQL."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

# sqlmigrate of a migration that is not atomic may not run inside the test's transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def sql_of(app_label: str, migration: str) -> str:
    out = io.StringIO()
    call_command("sqlmigrate", app_label, migration, stdout=out)
    return out.getvalue()


def test_the_jobs_expiry_indexes_are_built_concurrently_on_postgresql():
    sql = sql_of("jobs", "0012")

    if connection.vendor == "postgresql":
        assert sql.count("CREATE INDEX CONCURRENTLY") == 2
        assert "BEGIN" not in sql  # CONCURRENTLY cannot run in a transaction.
    else:
        assert (sql.count("CREATE INDEX"), sql.count("CONCURRENTLY")) == (2, 0)


def test_the_numbered_events_index_is_built_concurrently_on_postgresql():
    sql = sql_of("events", "0003")

    if connection.vendor == "postgresql":
        assert sql.count("CREATE UNIQUE INDEX CONCURRENTLY") == 1
    else:
        assert (sql.count("CREATE UNIQUE INDEX"), sql.count("CONCURRENTLY")) == (1, 0)


def test_the_indexes_built_concurrently_are_valid():
    # A CONCURRENTLY build that failed half-way leaves an index PostgreSQL does not use.
    if connection.vendor != "postgresql":
        pytest.skip("CONCURRENTLY is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(%s)",
            [["job_expiring", "job_finished_unstamped", "event_unique_owner_seq"]],
        )
        indexes = dict(cursor.fetchall())

    assert indexes == {
        "job_expiring": True,
        "job_finished_unstamped": True,
        "event_unique_owner_seq": True,
    }
