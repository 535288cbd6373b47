"""The whole job workflow against a real worker process, Beat, Redis and the test database."""

from datetime import timedelta

import pytest
from django.utils import timezone

from job_system.celery import app as celery_app
from jobs import queue
from jobs.models import Job, JobResult
from jobs.tests.live import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS = "/api/jobs/"


def wait_until_finished(job_id, timeout: float = 30) -> Job:
    return wait_for(
        lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED_STATUSES).first(),
        timeout=timeout,
        message=f"job {job_id} did not finish within {timeout}s",
    )


@pytest.mark.parametrize(
    ("job_type", "parameters", "expected"),
    [
        ("echo", {"message": "hi"}, {"message": "hi", "data": None}),
        ("word_count", {"text": "to be or not to be"}, {"words": 6, "unique_words": 4}),
        ("checksum", {"text": "abc"}, {"algorithm": "sha256", "bytes": 3}),
        ("primes", {"limit": 100}, {"count": 25, "largest": 97}),
        ("csv_summary", {"csv": "a,b\n1,x\n3,y\n"}, {"rows": 2}),
        ("sleep", {"seconds": 0.3}, {}),
    ],
)
def test_a_submitted_job_is_run_by_a_worker_and_its_result_served(
    live_worker, auth_client, job_type, parameters, expected
):
    created = auth_client.post(
        JOBS, {"name": job_type, "job_type": job_type, "parameters": parameters}, format="json"
    )
    assert created.status_code == 201

    job = wait_until_finished(created.data["id"])

    assert job.status == Job.Status.COMPLETED, job.error_message
    result = auth_client.get(f"{JOBS}{job.pk}/result/")
    assert result.status_code == 200
    assert expected.items() <= result.data["output"].items()
    shown = auth_client.get(f"{JOBS}{job.pk}/").data
    assert shown["status"] == "completed"
    assert shown["progress"] == 100


def test_a_failing_job_is_recorded_as_failed_without_a_result(live_worker, auth_client):
    created = auth_client.post(
        JOBS,
        {"name": "doomed", "job_type": "fail", "parameters": {"message": "it broke"}},
        format="json",
    )

    job = wait_until_finished(created.data["id"])

    assert job.status == Job.Status.FAILED
    assert job.error_message == "it broke"
    assert auth_client.get(f"{JOBS}{job.pk}/result/").status_code == 400


def test_a_retryable_failure_is_retried_by_beat_until_retries_run_out(
    live_worker, live_beat, auth_client, settings
):
    created = auth_client.post(
        JOBS,
        {
            "name": "flaky",
            "job_type": "fail",
            "parameters": {"message": "flaky", "retryable": True},
            "max_retries": 2,
        },
        format="json",
    )

    # The fail type backs off about 0.5 s, then 1 s, before Beat publishes the retries.
    job = wait_until_finished(created.data["id"], timeout=30)

    assert job.status == Job.Status.FAILED
    assert job.attempts == 3
    assert job.error_message == "flaky"


def test_a_scheduled_job_starts_when_due_and_never_before(live_worker, live_beat, auth_client):
    scheduled_time = timezone.now() + timedelta(seconds=3)
    created = auth_client.post(
        JOBS, {"name": "later", "scheduled_time": scheduled_time.isoformat()}, format="json"
    )

    job = wait_until_finished(created.data["id"], timeout=30)

    assert job.status == Job.Status.COMPLETED
    assert job.started_at >= scheduled_time
    assert job.started_at - scheduled_time < timedelta(seconds=3)


def test_cancelling_a_running_job_stops_it_and_frees_the_worker(live_worker, auth_client):
    created = auth_client.post(
        JOBS,
        {"name": "long", "job_type": "sleep", "parameters": {"seconds": 120}},
        format="json",
    )
    job_id = created.data["id"]
    wait_for(
        lambda: Job.objects.filter(pk=job_id, status=Job.Status.IN_PROGRESS).exists(), timeout=20
    )

    assert auth_client.post(f"{JOBS}{job_id}/cancel/").status_code == 200

    # The worker notices within a progress interval and goes on to the next job.
    follow_up = auth_client.post(JOBS, {"name": "next"}, format="json")
    assert wait_until_finished(follow_up.data["id"], timeout=15).status == Job.Status.COMPLETED
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.CANCELLED
    assert not JobResult.objects.filter(job_id=job_id).exists()


def test_a_duplicated_message_runs_the_job_once(live_worker, auth_client):
    created = auth_client.post(
        JOBS, {"name": "twice", "job_type": "sleep", "parameters": {"seconds": 1}}, format="json"
    )
    job_id = created.data["id"]

    # The same job published again, three times.
    queue.publish([queue.JobMessage(job_id, "sleep", 60)] * 3)

    job = wait_until_finished(job_id)
    assert job.status == Job.Status.COMPLETED
    assert job.attempts == 1
    assert JobResult.objects.filter(job_id=job_id).count() == 1


def test_a_job_whose_message_was_lost_is_recovered_by_the_reaper(
    live_worker, live_housekeeping, verified_user, job_factory
):
    # A row that was committed but whose message never reached Redis.
    long_ago = timezone.now() - timedelta(hours=1)
    job = job_factory(owner=verified_user, run_after=long_ago, enqueued_at=long_ago)

    celery_app.send_task("jobs.tasks.reap_stale_jobs")

    assert wait_until_finished(job.pk).status == Job.Status.COMPLETED


def test_a_bulk_of_quick_jobs_shares_messages_and_every_job_completes(live_worker, auth_client):
    body = {"jobs": [{"name": f"quick {n}", "job_type": "echo"} for n in range(60)]}

    response = auth_client.post(f"{JOBS}bulk/", body, format="json")

    assert response.status_code == 201
    completed = Job.objects.filter(status=Job.Status.COMPLETED, name__startswith="quick ")
    wait_for(lambda: completed.count() == 60, timeout=30)
    assert {job.attempts for job in completed} == {1}
    assert JobResult.objects.filter(job__in=completed).count() == 60
