"""The pruner: expired jobs go with every row that refers to them; nothing else does."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from events.models import Event, EventStream
from jobs import services
from jobs.models import Job, JobAttempt, JobResult
from jobs.services.pruning import jobs_prune_expired
from jobs.tests.concurrency import run_together
from jobs.tests.test_runs import FAILS_FOR_GOOD, run
from webhooks.endpoints import endpoint_create
from webhooks.fanout import webhooks_fan_out
from webhooks.models import Delivery, DeliveryAttempt, Endpoint

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def later(delta: timedelta):
    return time_machine.travel(timezone.now() + delta, tick=False)


def finished(job_factory, owner, status: str) -> Job:
    """A job that ended in `status` now, the way it ends for real."""
    if status == Job.Status.CANCELLED:
        return services.job_cancel(job=job_factory(owner=owner))
    if status == Job.Status.FAILED:
        return run(job_factory(owner=owner, job_type="fail", parameters=FAILS_FOR_GOOD))
    return run(job_factory(owner=owner))


def with_callback(owner) -> Job:
    """A job submitted with a callback_url."""
    job, _ = services.job_create(
        owner=owner,
        name="a",
        job_type="echo",
        parameters={"message": "hi", "data": None},
        callback_url="https://hooks.example.com/cb",
    )
    return job


def deliver_once(owner) -> None:
    """Make the deliveries of the owner's events, and one attempt of each."""
    webhooks_fan_out(owner_id=owner.pk)
    for delivery in Delivery.objects.filter(log=None):
        DeliveryAttempt.objects.create(delivery=delivery, endpoint=delivery.endpoint)


@pytest.mark.parametrize(("status", "days"), [("completed", 30), ("failed", 90), ("cancelled", 90)])
def test_a_finished_job_goes_at_its_expiry_and_not_a_second_before(
    verified_user, job_factory, status, days
):
    job = finished(job_factory, verified_user, status)
    assert job.expires_at == job.completed_at + days * DAY

    with time_machine.travel(job.expires_at - SECOND, tick=False):
        assert jobs_prune_expired()["deleted"] == 0
    assert Job.objects.filter(pk=job.pk).exists()
    with time_machine.travel(job.expires_at, tick=False):
        assert jobs_prune_expired()["deleted"] == 1
    assert not Job.objects.filter(pk=job.pk).exists()


def test_pending_and_running_jobs_are_never_pruned(verified_user, job_factory):
    old = timezone.now() - 400 * DAY
    pending = job_factory(owner=verified_user, created_at=old)
    running = job_factory(owner=verified_user, created_at=old, status=Job.Status.IN_PROGRESS)
    # Even with an expiry they should not have (a bug elsewhere, a hand-edited row).
    Job.objects.filter(pk__in=[pending.pk, running.pk]).update(expires_at=old)

    assert jobs_prune_expired()["deleted"] == 0
    assert Job.objects.count() == 2


def test_a_job_goes_with_its_result_attempts_events_deliveries_and_callback(
    verified_user, job_factory
):
    endpoint_create(owner=verified_user, url="https://hooks.example.com/")
    doomed = run(with_callback(verified_user))
    kept = run(job_factory(owner=verified_user))
    deliver_once(verified_user)
    # Its job.completed event, to the owner's endpoint and to its callback.
    assert Delivery.objects.filter(event__job=doomed).count() == 2
    Job.objects.filter(pk=kept.pk).update(expires_at=timezone.now() + 40 * DAY)

    doomed_seqs = list(Event.objects.filter(job=doomed).values_list("seq", flat=True))
    with later(31 * DAY):
        assert jobs_prune_expired() == {"stamped": 0, "deleted": 1}

    assert list(Job.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not JobResult.objects.filter(job_id=doomed.pk).exists()
    assert not JobAttempt.objects.filter(job_id=doomed.pk).exists()
    assert not Event.objects.filter(job_id=doomed.pk).exists()
    assert not Endpoint.objects.filter(job_id=doomed.pk).exists()
    assert not Delivery.objects.exclude(event__job=kept).exists()
    assert DeliveryAttempt.objects.count() == Delivery.objects.count() > 0
    assert JobAttempt.objects.filter(job=kept).exists()
    assert Event.objects.filter(job=kept).exists()
    # A stream resuming from before the deleted events is told it missed them.
    assert EventStream.objects.get(owner=verified_user).pruned_through == max(doomed_seqs)


def test_a_callback_whose_event_went_first_goes_with_its_job(verified_user, settings):
    run(with_callback(verified_user))
    Event.objects.all().delete()  # as the shorter event retention does

    with later(31 * DAY):
        assert jobs_prune_expired()["deleted"] == 1
    assert not Endpoint.objects.exists()


def test_a_job_holding_an_idempotency_key_answers_repeats_for_a_day(auth_client, settings):
    settings.JOB_RETENTION_COMPLETED_DAYS = 0
    body = {"name": "once", "job_type": "echo", "parameters": {}}
    submit = lambda: auth_client.post("/api/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")  # noqa: E731
    first = submit().json()
    run(Job.objects.get(pk=first["id"]))

    with later(IDEMPOTENCY_DAY - SECOND):
        assert jobs_prune_expired()["deleted"] == 0
        repeat = submit()
    assert (repeat.status_code, repeat.json()["id"]) == (200, first["id"])
    with later(IDEMPOTENCY_DAY + SECOND):
        assert jobs_prune_expired()["deleted"] == 1


IDEMPOTENCY_DAY = timedelta(hours=24)


def test_a_job_rerun_between_the_choice_and_the_lock_stays_with_its_history(
    verified_user, job_factory
):
    rerun = finished(job_factory, verified_user, Job.Status.FAILED)
    other = finished(job_factory, verified_user, Job.Status.FAILED)
    history = JobAttempt.objects.filter(job=rerun).count() + Event.objects.filter(job=rerun).count()
    done = []

    def rerun_first(execute, sql, params, many, context):
        # The moment between the pruner's choice of candidates and its lock on those of them
        # that are still expired (the SELECT of the chosen ones by id).
        if sql.startswith('SELECT "jobs_job"."id"') and '"jobs_job"."id" IN (' in sql and not done:
            done.append(True)
            services.job_retry(job=Job.objects.get(pk=rerun.pk))
        return execute(sql, params, many, context)

    with later(91 * DAY), connection.execute_wrapper(rerun_first):
        assert jobs_prune_expired()["deleted"] == 1

    assert done
    assert list(Job.objects.values_list("pk", "status")) == [(rerun.pk, Job.Status.PENDING)]
    assert not Job.objects.filter(pk=other.pk).exists()
    kept = JobAttempt.objects.filter(job=rerun).count() + Event.objects.filter(job=rerun).count()
    assert kept == history + 1  # and the rerun's job.pending event


def test_a_retry_of_a_job_pruned_during_the_request_is_a_404(
    auth_client, verified_user, job_factory
):
    job = finished(job_factory, verified_user, Job.Status.FAILED)
    done = []

    def prune_first(execute, sql, params, many, context):
        # The pruner commits between the view's read of the job and the retry's UPDATE.
        if 'UPDATE "jobs_job"' in sql and not done:  # on PostgreSQL, inside a WITH
            done.append(jobs_prune_expired())
        return execute(sql, params, many, context)

    with later(91 * DAY), connection.execute_wrapper(prune_first):
        response = auth_client.post(f"/api/jobs/{job.pk}/retry/")

    assert done == [{"stamped": 0, "deleted": 1}]
    assert response.status_code == 404


def test_no_delete_removes_more_rows_than_the_batch_size(verified_user, job_factory, settings):
    settings.JOB_PRUNE_BATCH_SIZE = 8
    jobs = [run(job_factory(owner=verified_user)) for _ in range(10)]
    for job in jobs:  # events enough that a batch's are more than a statement deletes
        for _ in range(3):
            Event.objects.create(owner=verified_user, type="job.progress", job=job, status="x")
    events = Event.objects.count()
    deletes: list[tuple[str, int]] = []

    def count_rows(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("DELETE"):
            deletes.append((sql.split('"')[1], context["cursor"].rowcount))
        return result

    with later(31 * DAY), connection.execute_wrapper(count_rows):
        assert jobs_prune_expired()["deleted"] == 10

    assert max(rows for _, rows in deletes) == 8
    # The jobs' own DELETEs a quarter of that: each deleted job's foreign-key checks cost more.
    assert max(rows for table, rows in deletes if table == "jobs_job") == 2
    assert sum(rows for table, rows in deletes if table == "jobs_job") == 10
    assert sum(rows for table, rows in deletes if table == "events_event") == events > 8
    assert not Event.objects.exists()
    assert not JobAttempt.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_rows_a_batch_deletes_are_read_before_it_locks_anything(verified_user, job_factory):
    run(job_factory(owner=verified_user))
    read_outside_a_transaction: set[str] = set()

    def note_reads(execute, sql, params, many, context):
        if sql.startswith("SELECT") and not context["connection"].in_atomic_block:
            read_outside_a_transaction.update(re.findall(r'FROM "(\w+)"', sql))
        return execute(sql, params, many, context)

    with later(31 * DAY), connection.execute_wrapper(note_reads):
        assert jobs_prune_expired()["deleted"] == 1

    # So the DELETEs, which hold the batch's locks, find their pages in the server's cache.
    assert {"jobs_jobattempt", "jobs_jobresult", "events_event"} <= read_outside_a_transaction


def synchronous_commit_while_deleting_jobs() -> list[str]:
    """Prune, and say what synchronous_commit was as each DELETE of jobs ran."""
    settings_seen: list[str] = []

    def note_setting(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith('DELETE FROM "jobs_job"'):
            with context["connection"].cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                settings_seen.append(cursor.fetchone()[0])
        return result

    with later(31 * DAY), connection.execute_wrapper(note_setting):
        assert jobs_prune_expired()["deleted"] == 1
    return settings_seen


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's WAL")
@pytest.mark.django_db(transaction=True)
def test_the_pruners_commits_do_not_wait_for_the_disk_and_later_ones_do(verified_user, job_factory):
    run(job_factory(owner=verified_user))

    assert synchronous_commit_while_deleting_jobs() == ["off"]

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"  # It ended with the batch.


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's WAL")
def test_a_pruner_inside_a_transaction_leaves_its_commit_waiting_for_the_disk(
    verified_user, job_factory
):
    run(job_factory(owner=verified_user))

    # The test's own transaction encloses the pruner's, as a caller's might.
    assert synchronous_commit_while_deleting_jobs() == ["on"]


def test_jobs_finished_before_retention_are_stamped_then_pruned(verified_user, job_factory):
    now = timezone.now()
    old = job_factory(owner=verified_user, status=Job.Status.COMPLETED, completed_at=now - 31 * DAY)
    recent = job_factory(owner=verified_user, status=Job.Status.FAILED, completed_at=now - 10 * DAY)
    pending = job_factory(owner=verified_user)

    assert jobs_prune_expired() == {"stamped": 2, "deleted": 1}

    assert not Job.objects.filter(pk=old.pk).exists()
    recent.refresh_from_db()
    assert recent.expires_at == recent.completed_at + 90 * DAY
    assert Job.objects.get(pk=pending.pk).expires_at is None
    assert jobs_prune_expired() == {"stamped": 0, "deleted": 0}


@pytest.mark.django_db(transaction=True)
def test_two_pruners_at_once_delete_each_job_once(verified_user, job_factory, settings):
    settings.JOB_PRUNE_BATCH_SIZE = 3
    for _ in range(20):
        run(job_factory(owner=verified_user))

    with later(31 * DAY):
        counts = run_together(2, jobs_prune_expired)

    assert len(counts) == 2
    assert sum(count["deleted"] for count in counts) == 20
    assert not Job.objects.exists()
    assert not JobAttempt.objects.exists()


def test_the_admin_action_prunes_the_selected_jobs_that_have_expired(
    client, user_factory, verified_user, job_factory
):
    staff = user_factory(is_staff=True, is_superuser=True)
    expired = finished(job_factory, verified_user, Job.Status.COMPLETED)
    unselected = finished(job_factory, verified_user, Job.Status.COMPLETED)
    live = finished(job_factory, verified_user, Job.Status.FAILED)

    with later(31 * DAY):
        client.force_login(staff)
        response = client.post(
            "/admin/jobs/job/",
            {"action": "prune_expired_jobs", "_selected_action": [expired.pk, live.pk]},
            follow=True,
        )

    assert "Deleted 1 expired job(s)" in response.content.decode()
    assert set(Job.objects.values_list("pk", flat=True)) == {unselected.pk, live.pk}


def test_the_management_command_prunes(verified_user, job_factory, capsys):
    finished(job_factory, verified_user, Job.Status.COMPLETED)

    with later(31 * DAY):
        call_command("prune_expired_jobs")

    assert capsys.readouterr().out == "stamped 0 deleted 1\n"
    assert not Job.objects.exists()


def test_beat_prunes_on_the_housekeeping_queue(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["prune-expired-jobs"]
    assert schedule["task"] == "jobs.tasks.prune_expired_jobs"
    assert settings.CELERY_TASK_ROUTES[schedule["task"]] == {"queue": "housekeeping"}


@pytest.fixture
def pruner_clock(monkeypatch, settings, verified_user, job_factory) -> list[float]:
    """Three finished jobs, a batch of one each, pauses twice a batch's time, and a clock for
    the pruner where each batch takes half a second; returns its pauses."""
    from jobs.services import pruning

    settings.JOB_PRUNE_BATCH_SIZE = 1
    settings.JOB_PRUNE_PAUSE_RATIO = 2.0
    for _ in range(3):
        run(job_factory(owner=verified_user))

    now = [0.0]
    pauses: list[float] = []
    batch = pruning._prune_batch

    def timed_batch(*args, **kwargs):
        now[0] += 0.5
        return batch(*args, **kwargs)

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(pruning, "_prune_batch", timed_batch)
    monkeypatch.setattr(pruning, "monotonic", lambda: now[0])
    monkeypatch.setattr(pruning, "sleep", sleep)
    return pauses


def test_beats_pruner_pauses_after_each_batch_for_its_share_of_the_time(settings, pruner_clock):
    from jobs.tasks import prune_expired_jobs

    settings.JOB_PRUNE_RUN_SECONDS = 60.0

    with later(31 * DAY):
        assert prune_expired_jobs()["deleted"] == 3

    assert pruner_clock == [1.0, 1.0, 1.0]


def test_beats_pruner_stops_after_its_run_seconds_and_the_next_run_goes_on(settings, pruner_clock):
    from jobs.tasks import prune_expired_jobs

    settings.JOB_PRUNE_RUN_SECONDS = 2.0

    with later(31 * DAY):
        # A batch (0.5 s) and its pause (1 s), then a batch and no pause: 2 s are up.
        assert prune_expired_jobs()["deleted"] == 2
        assert pruner_clock == [1.0, 0.0]
        assert prune_expired_jobs()["deleted"] == 1
