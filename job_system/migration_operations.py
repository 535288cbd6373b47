"""Migration operations that add indexes to busy tables without stopping their writes.

A plain CREATE INDEX holds a lock that blocks every INSERT and UPDATE of the table until the
index is built: on a jobs or events table of millions of rows, submissions and workers wait
that long. On PostgreSQL these operations build CONCURRENTLY instead, which a migration may
only do outside a transaction (`atomic = False`); elsewhere (SQLite, one writer at a time in
any case) they do what Django's own operations do.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


def _concurrently(schema_editor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


class AddIndexWithoutBlocking(AddIndexConcurrently):
    """AddIndex, built CONCURRENTLY on PostgreSQL."""

    def describe(self) -> str:
        return f"{migrations.AddIndex.describe(self)} (concurrently on PostgreSQL)"

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if _concurrently(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if _concurrently(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )


class AddPartialUniqueWithoutBlocking(migrations.AddConstraint):
    """AddConstraint of a UniqueConstraint with a condition, built CONCURRENTLY on PostgreSQL.

    PostgreSQL keeps such a constraint as a unique index, so it can be built like one.
    """

    atomic = False

    def describe(self) -> str:
        return f"{super().describe()} (concurrently on PostgreSQL)"

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if not _concurrently(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        if self.constraint.condition is None:
            raise ValueError(f"{self.constraint.name} is not partial: use AddConstraint")
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            plain = schema_editor.sql_create_unique_index
            schema_editor.sql_create_unique_index = plain.replace(
                "CREATE UNIQUE INDEX", "CREATE UNIQUE INDEX CONCURRENTLY", 1
            )
            try:
                schema_editor.add_constraint(model, self.constraint)
            finally:
                schema_editor.sql_create_unique_index = plain
