from django.db import migrations, models

# The text each database stores has spaces after separators (and, on SQLite, six-byte \u
# escapes for characters outside ASCII), so existing rows get a size above their compact
# JSON's: a result list then cuts their pages early, never late.
STORED_SIZE = {
    "postgresql": "UPDATE jobs_jobresult SET output_bytes = octet_length(output::text)",
    "sqlite": "UPDATE jobs_jobresult SET output_bytes = length(CAST(output AS BLOB))",
}


def size_existing_results(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(STORED_SIZE[schema_editor.connection.vendor])


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0008_idempotency_keys_for_batches"),
    ]

    operations = [
        migrations.AddField(
            model_name="jobresult",
            name="output_bytes",
            field=models.PositiveIntegerField(
                default=0, help_text="The output's size as compact UTF-8 JSON, in bytes."
            ),
        ),
        migrations.RunPython(size_existing_results, migrations.RunPython.noop, elidable=True),
    ]
