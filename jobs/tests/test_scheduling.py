"""Scheduled jobs start on time: published ahead with an ETA, never early, never twice."""

from datetime import datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from job_system.celery import app as celery_app
from job_system.tests.test_settings import start_settings
from jobs import handlers, queue, services
from jobs.models import Job
from jobs.tests.live import take_published, wait_for
from scripts.stack import procfile_command

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"
LOOKAHEAD = timedelta(seconds=settings.JOB_DISPATCH_LOOKAHEAD_SECONDS)


def eta_of(headers: dict) -> datetime | None:
    return headers["eta"] and datetime.fromisoformat(headers["eta"])


@pytest.fixture
def frozen_now():
    now = timezone.now()
    with time_machine.travel(now, tick=False):
        yield now


def test_the_dispatcher_publishes_jobs_due_within_the_look_ahead(job_factory, frozen_now):
    due = job_factory(run_after=frozen_now - timedelta(seconds=1), enqueued_at=None)
    soon = job_factory(run_after=frozen_now + LOOKAHEAD, enqueued_at=None)
    later = job_factory(run_after=frozen_now + LOOKAHEAD + timedelta(seconds=1), enqueued_at=None)

    assert services.jobs_dispatch_due() == 2

    for job in (due, soon, later):
        job.refresh_from_db()
    assert due.enqueued_at == soon.enqueued_at == frozen_now
    assert later.enqueued_at is None


def test_a_job_not_yet_due_goes_out_with_its_run_after_as_eta(
    job_factory, frozen_now, django_capture_on_commit_callbacks
):
    due = job_factory(run_after=frozen_now, enqueued_at=None)
    soon = job_factory(run_after=frozen_now + timedelta(seconds=1.5), enqueued_at=None)

    with django_capture_on_commit_callbacks(execute=True):
        services.jobs_dispatch_due()

    [due_message] = take_published(due)
    [soon_message] = take_published(soon)
    assert eta_of(due_message) is None
    assert eta_of(soon_message) == soon.run_after


def test_a_job_beyond_the_look_ahead_is_published_once_it_comes_within_it(
    job_factory, django_capture_on_commit_callbacks
):
    now = timezone.now()
    job = job_factory(run_after=now + timedelta(seconds=10), enqueued_at=None)

    with time_machine.travel(now, tick=False):
        assert services.jobs_dispatch_due() == 0
    with (
        time_machine.travel(job.run_after - LOOKAHEAD / 2, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert services.jobs_dispatch_due() == 1
        assert services.jobs_dispatch_due() == 0
    with time_machine.travel(job.run_after, tick=False):
        assert services.jobs_dispatch_due() == 0  # due now, but already published

    [message] = take_published(job)
    assert eta_of(message) == job.run_after


def test_a_message_never_waits_in_the_broker_longer_than_the_look_ahead(job_factory, frozen_now):
    job = job_factory(run_after=frozen_now + timedelta(hours=1), enqueued_at=frozen_now)

    queue.publish([queue.message_for(job)])

    # Early, so the claim refuses it and hands it back, rather than an hour in a worker.
    [message] = take_published(job)
    assert eta_of(message) == frozen_now + LOOKAHEAD


def test_a_job_scheduled_within_the_look_ahead_is_published_at_once_with_an_eta(
    auth_client, frozen_now, django_capture_on_commit_callbacks
):
    scheduled_time = frozen_now + timedelta(seconds=0.5)

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            JOBS, {"name": "soon", "scheduled_time": scheduled_time.isoformat()}, format="json"
        )

    assert response.status_code == 201
    job = Job.objects.get(pk=response.data["id"])
    assert job.run_after == scheduled_time
    assert job.enqueued_at == frozen_now
    [message] = take_published(job)
    assert eta_of(message) == scheduled_time
    assert services.jobs_dispatch_due() == 0


def test_a_bulk_publishes_the_jobs_due_soon_and_leaves_later_ones_to_the_dispatcher(
    auth_client, frozen_now, django_capture_on_commit_callbacks
):
    soon = frozen_now + timedelta(seconds=1)
    later = frozen_now + timedelta(minutes=5)
    jobs = [
        {"name": "now"},
        {"name": "soon", "scheduled_time": soon.isoformat()},
        {"name": "later", "scheduled_time": later.isoformat()},
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(f"{JOBS}bulk/", {"jobs": jobs}, format="json")

    assert response.status_code == 201
    created = {job.name: job for job in Job.objects.all()}
    assert [eta_of(m) for m in take_published(created["now"])] == [None]
    assert [eta_of(m) for m in take_published(created["soon"])] == [soon]
    assert take_published(created["later"]) == []
    assert created["later"].enqueued_at is None


def test_a_retried_job_scheduled_within_the_look_ahead_is_published_with_an_eta(
    auth_client, verified_user, job_factory, frozen_now, django_capture_on_commit_callbacks
):
    scheduled_time = frozen_now + timedelta(seconds=1)
    job = job_factory(owner=verified_user, status=Job.Status.FAILED, scheduled_time=scheduled_time)

    with django_capture_on_commit_callbacks(execute=True):
        assert auth_client.post(f"{JOBS}{job.pk}/retry/").status_code == 200

    job.refresh_from_db()
    assert job.enqueued_at == frozen_now
    [message] = take_published(job)
    assert eta_of(message) == scheduled_time


def test_an_early_message_releases_its_job_to_the_dispatcher(job_factory, frozen_now):
    job = job_factory(run_after=frozen_now + timedelta(seconds=1), enqueued_at=frozen_now)

    assert services.job_release_if_early(job_id=job.pk) is True

    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert job.enqueued_at is None
    assert services.jobs_dispatch_due() == 1  # published again, with its ETA
    assert services.job_release_if_early(job_id=job.pk) is True
    assert services.job_release_if_early(job_id=job.pk) is False  # already released


@pytest.mark.parametrize(
    "state",
    [
        {"run_after_seconds": 0},  # due: the claim decides
        {"run_after_seconds": -1},
        {"run_after_seconds": 1, "status": Job.Status.IN_PROGRESS},
        {"run_after_seconds": 1, "status": Job.Status.CANCELLED},
    ],
)
def test_only_an_early_pending_job_is_released(job_factory, frozen_now, state):
    run_after = frozen_now + timedelta(seconds=state["run_after_seconds"])
    job = job_factory(
        run_after=run_after,
        enqueued_at=frozen_now,
        status=state.get("status", Job.Status.PENDING),
    )

    assert services.job_release_if_early(job_id=job.pk) is False

    job.refresh_from_db()
    assert job.enqueued_at == frozen_now


def test_beats_tasks_go_to_the_housekeeping_queue_not_behind_jobs():
    for task in (
        "jobs.tasks.dispatch_due_jobs",
        "jobs.tasks.reap_stale_jobs",
        "users.tasks.purge_expired_codes",
        "users.tasks.flush_expired_tokens",
    ):
        assert celery_app.amqp.router.route({}, task)["queue"].name == "housekeeping"


def queues_served_by(process_type: str) -> set[str]:
    return set(procfile_command(process_type).split("--queues=")[1].split()[0].split(","))


def test_the_procfile_workers_serve_every_job_queue_and_housekeeping_its_own():
    quick, long = queues_served_by("worker"), queues_served_by("worker-long")
    assert {handler.queue for handler in handlers.all_handlers()} <= quick | long
    assert not quick & long  # Long jobs never hold the processes quick ones need.
    assert handlers.get("sleep").queue in long
    assert handlers.get("echo").queue in quick
    assert "housekeeping" not in quick | long
    assert queues_served_by("housekeeping") == {"housekeeping"}


def test_a_look_ahead_no_longer_than_the_dispatch_interval_is_refused():
    started = start_settings(
        DEBUG="true", JOB_DISPATCH_INTERVAL_SECONDS="2", JOB_DISPATCH_LOOKAHEAD_SECONDS="2"
    )

    assert started.returncode != 0
    assert "JOB_DISPATCH_LOOKAHEAD_SECONDS must be longer" in started.stderr


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "seconds_ahead",
    [
        pytest.param(1.5, id="published-on-submission"),
        pytest.param(3.0, id="published-by-the-dispatcher"),
    ],
)
def test_a_scheduled_job_starts_on_time_and_never_early(
    live_worker, live_beat, auth_client, verified_user, job_factory, seconds_ahead
):
    probe = job_factory(owner=verified_user, enqueued_at=None)  # only the dispatcher sends it
    wait_for(
        lambda: Job.objects.filter(pk=probe.pk, enqueued_at__isnull=False).exists(),
        timeout=30,
        message="Beat did not start dispatching",
    )
    scheduled_time = timezone.now() + timedelta(seconds=seconds_ahead)

    created = auth_client.post(
        JOBS, {"name": "on time", "scheduled_time": scheduled_time.isoformat()}, format="json"
    )

    job = wait_for(
        lambda: Job.objects.filter(pk=created.data["id"], status=Job.Status.COMPLETED).first(),
        timeout=30,
    )
    assert job.started_at >= scheduled_time
    assert job.started_at - scheduled_time < timedelta(seconds=1)
