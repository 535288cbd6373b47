"""Let a bulk request's jobs share its Idempotency-Key, and fingerprint what requests ask for.

Fingerprints were of the raw body; they are now of the jobs a request asks for, defaults
filled in (jobs.idempotency). Keyed jobs stored before get theirs from their own fields, so a
client that retries across the upgrade still gets its job back. Only single submissions had
keys until now.
"""

from django.conf import settings
from django.db import migrations, models

from jobs.idempotency import REQUESTED_FIELDS, request_fingerprint

BATCH_SIZE = 1000


def fingerprint_what_was_asked_for(apps, schema_editor) -> None:
    Job = apps.get_model("jobs", "Job")
    keyed = Job.objects.exclude(idempotency_key="").only("pk", *REQUESTED_FIELDS).order_by()
    batch = []
    for job in keyed.iterator(chunk_size=BATCH_SIZE):
        job.request_fingerprint = request_fingerprint("job", [job])
        batch.append(job)
        if len(batch) == BATCH_SIZE:
            Job.objects.bulk_update(batch, ["request_fingerprint"])
            batch = []
    Job.objects.bulk_update(batch, ["request_fingerprint"])


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0007_attempts_numbered_for_life"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="job",
            name="job_unique_idempotency_key",
        ),
        migrations.AddField(
            model_name="job",
            name="batch_position",
            field=models.PositiveSmallIntegerField(
                default=0,
                editable=False,
                help_text="The job's place in the bulk request that made it; 0 for a single one.",
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(
                condition=models.Q(("idempotency_key", ""), _negated=True),
                fields=("owner", "idempotency_key", "batch_position"),
                name="job_unique_idempotency_key",
            ),
        ),
        migrations.RunPython(fingerprint_what_was_asked_for, migrations.RunPython.noop),
    ]
