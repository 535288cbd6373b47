from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from jobs import queue
from jobs.models import Job
from jobs.tests.live import take_published

pytestmark = pytest.mark.django_db

BULK = "/api/jobs/bulk/"


def test_bulk_creates_every_job_in_one_request(auth_client, verified_user):
    jobs = [{"name": f"job {n}", "job_type": "echo"} for n in range(3)]
    jobs.append({"name": "count", "job_type": "word_count", "parameters": {"text": "a b"}})

    response = auth_client.post(BULK, {"jobs": jobs}, format="json")

    assert response.status_code == 201
    assert response.json()["count"] == 4
    created = Job.objects.filter(owner=verified_user)
    assert created.count() == 4
    assert created.get(name="count").parameters == {"text": "a b", "top": 10}
    assert all(job.enqueued_at is not None for job in created)


def test_one_invalid_job_refuses_the_whole_request_with_errors_by_position(auth_client):
    jobs = [
        {"name": "fine"},
        {"name": "bad", "job_type": "sleep", "parameters": {"seconds": -1}},
        {"job_type": "echo"},
    ]

    response = auth_client.post(BULK, {"jobs": jobs}, format="json")

    assert response.status_code == 400
    errors = response.json()["jobs"]
    assert "seconds" in errors["1"]["parameters"]
    assert "name" in errors["2"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("count", [0, 501])
def test_bulk_takes_1_to_500_jobs(auth_client, count):
    response = auth_client.post(BULK, {"jobs": [{"name": "x"}] * count}, format="json")

    assert response.status_code == 400
    assert "jobs" in response.json()
    assert not Job.objects.exists()


def test_scheduled_jobs_in_a_bulk_wait_for_the_dispatcher(auth_client):
    later = (timezone.now() + timedelta(minutes=5)).isoformat()

    auth_client.post(BULK, {"jobs": [{"name": "later", "scheduled_time": later}]}, format="json")

    assert Job.objects.get(name="later").enqueued_at is None


def test_bulk_respects_the_active_job_cap(auth_client, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 2

    response = auth_client.post(BULK, {"jobs": [{"name": "x"}] * 3}, format="json")

    assert response.status_code == 429
    assert not Job.objects.exists()


def test_bulk_publishes_every_due_job_after_commit(auth_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        auth_client.post(BULK, {"jobs": [{"name": "a"}, {"name": "b"}]}, format="json")

    # One publish for the whole batch, and one announcement of its events, after the commit.
    assert len(callbacks) == 2


def test_a_bulk_publish_reaches_redis_in_one_round_trip(job_factory, monkeypatch, settings):
    settings.JOB_MESSAGE_BATCH_SIZE = 1  # a message per job
    jobs = [job_factory() for _ in range(50)]
    sent = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(connection, command, *args, **kwargs):
        sent.append(command)
        return send(connection, command, *args, **kwargs)

    queue.publish([queue.message_for(job) for job in jobs])  # connect and declare first
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    queue.publish([queue.message_for(job) for job in jobs])

    assert len(sent) == 1  # the pipeline: 50 LPUSHes in one write
    assert [len(take_published(job)) for job in jobs] == [2] * len(jobs)
