"""Number attempts for the life of a job, and keep the run each belongs to.

Until now a manual retry reset `attempts` to 0 and a hand-back took one off, so numbers
repeated. Existing histories are renumbered in order, and a drop in the old numbers marks a
retry's new run.
"""

from django.db import migrations, models
from django.db.models import Count, F, Q


def number_attempts_for_life(apps, schema_editor) -> None:
    Job = apps.get_model("jobs", "Job")
    JobAttempt = apps.get_model("jobs", "JobAttempt")
    # The old `attempts` counted the current run's attempts less those handed back: exactly
    # what run_attempts counts.
    Job.objects.exclude(attempts=0).update(run_attempts=F("attempts"))
    # Only a retry or a hand-back left a job with fewer attempts than attempt rows (plus the
    # running one, which has no row yet); the other jobs are numbered right already.
    renumber = Job.objects.annotate(finished=Count("attempt_log")).filter(
        Q(attempts__lt=F("finished")) | Q(status="in_progress", attempts__lte=F("finished"))
    )
    for job in renumber.iterator():
        attempts = list(JobAttempt.objects.filter(job=job).order_by("started_at", "pk"))
        run, expected = 1, 1  # `expected`: the old number of the next attempt in this run
        for number, attempt in enumerate(attempts, start=1):
            if attempt.number < expected:
                run += 1
            expected = attempt.number + (attempt.outcome != "handed_back")
            attempt.number, attempt.run = number, run
        JobAttempt.objects.bulk_update(attempts, ["number", "run"])
        running = 1 if job.status == "in_progress" else 0
        if job.attempts + 1 - running < expected:  # retried since its last attempt ended
            run += 1
        Job.objects.filter(pk=job.pk).update(attempts=len(attempts) + running, run=run)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0006_attempt_job_no_single_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="run",
            field=models.PositiveIntegerField(
                default=1, help_text="1, and one more for each manual retry of the job."
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="run_attempts",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Attempts of this run that count against max_retries (an attempt "
                "handed back by a worker that was shutting down does not).",
            ),
        ),
        migrations.AddField(
            model_name="jobattempt",
            name="run",
            field=models.PositiveIntegerField(
                default=1, help_text="The job's run this attempt was in."
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="attempts",
            field=models.PositiveIntegerField(
                default=0, help_text="Attempts in every run so far; the latest one's number."
            ),
        ),
        migrations.AlterField(
            model_name="jobattempt",
            name="number",
            field=models.PositiveIntegerField(help_text="1, 2, 3, ... over the life of the job."),
        ),
        migrations.AlterModelOptions(
            name="jobattempt",
            options={"ordering": ["number"]},
        ),
        # Before the index on (job, started_at) goes: the renumbering reads through it.
        migrations.RunPython(number_attempts_for_life, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="jobattempt",
            constraint=models.UniqueConstraint(
                fields=("job", "number"), name="attempt_unique_number"
            ),
        ),
        migrations.RemoveIndex(
            model_name="jobattempt",
            name="attempt_job_started",
        ),
    ]
