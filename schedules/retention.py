"""How long schedule runs are kept: the runs table follows the jobs' retention.

A run is a tick's record: the job it made, or why it made none. Once the pruner has deleted
its job (ScheduleRun.job goes NULL), a run says only that a tick fired, and it goes too. A
skipped run never had a job; it says why a tick did not run, and is kept as long as a failed
job (JOB_RETENTION_FAILED_DAYS). Each schedule's LAST_RUNS newest runs stay whatever their
age, since the API shows them.

Deleting a run cannot let its tick fire again: a tick fires only from the schedule's
next_fire_at on, which moves forward, or is worked out afresh from now (an edit, a resume).
No run younger than RECENT is deleted all the same.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from schedules.models import ScheduleRun

# Runs deleted per statement and transaction.
BATCH = 5_000
RECENT = timedelta(days=1)


def schedule_runs_prune() -> int:
    """Delete the runs retention no longer keeps, a batch at a time; return how many."""
    now = timezone.now()
    skips_kept_since = now - timedelta(days=settings.JOB_RETENTION_FAILED_DAYS)
    # Through the partial index schedule_run_unlinked (runs without a job), and for each
    # candidate the (schedule, fire_time) index.
    candidates = ScheduleRun.objects.filter(
        Q(skipped="") | Q(fire_time__lt=skips_kept_since), job=None, fire_time__lt=now - RECENT
    ).shown(False)
    total = 0
    while True:
        with transaction.atomic():
            batch = list(candidates.values_list("pk", flat=True)[:BATCH])
            ScheduleRun.objects.filter(pk__in=batch).delete()
        total += len(batch)
        if len(batch) < BATCH:
            return total
