from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.tests.concurrency import run_together

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"
BODY = {"name": "once", "job_type": "echo", "parameters": {"message": "hi"}}


def submit(client, body=BODY, key="key-1"):
    return client.post(JOBS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_return_the_original_job(auth_client):
    first = submit(auth_client)
    again = submit(auth_client)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


def test_key_order_in_the_body_does_not_matter(auth_client):
    first = submit(auth_client, {"parameters": {"message": "hi"}, "name": "once"})
    again = submit(auth_client, {"name": "once", "parameters": {"message": "hi"}})

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_the_same_key_with_another_body_is_a_conflict(auth_client):
    submit(auth_client)

    other = submit(auth_client, {**BODY, "name": "different"})

    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_keys_belong_to_their_user(api_client, user_factory):
    jobs = []
    for user in user_factory.create_batch(2):
        api_client.force_authenticate(user)
        jobs.append(submit(api_client).json()["id"])

    assert jobs[0] != jobs[1]


def test_requests_without_a_key_always_create(auth_client):
    auth_client.post(JOBS, BODY, format="json")
    auth_client.post(JOBS, BODY, format="json")

    assert Job.objects.count() == 2


def test_an_overlong_key_is_refused(auth_client):
    response = submit(auth_client, key="k" * 256)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()


def test_the_database_refuses_a_second_job_with_the_same_key(job_factory, verified_user):
    job_factory(owner=verified_user, idempotency_key="dup")

    with pytest.raises(IntegrityError):
        job_factory(owner=verified_user, idempotency_key="dup")


@pytest.mark.django_db(transaction=True)
def test_racing_retries_with_one_key_make_one_job(verified_user):
    def retry():
        client = APIClient()
        client.force_authenticate(verified_user)
        return submit(client).status_code

    statuses = run_together(6, retry)

    assert sorted(statuses) == [200] * 5 + [201]
    assert Job.objects.count() == 1


def test_a_retry_after_the_scheduled_time_passed_still_returns_the_job(auth_client):
    soon = timezone.now() + timedelta(seconds=5)
    body = {"name": "later", "scheduled_time": soon.isoformat()}
    first = submit(auth_client, body)

    with time_machine.travel(soon + timedelta(minutes=1)):
        again = submit(auth_client, body)

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
