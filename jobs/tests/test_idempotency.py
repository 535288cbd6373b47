from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import handlers
from jobs.models import Job
from jobs.tests.concurrency import run_together

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"
BULK = "/api/jobs/bulk/"
BODY = {"name": "once", "job_type": "echo", "parameters": {"message": "hi"}}
BATCH = {"jobs": [{"name": f"job {n}", "parameters": {"message": str(n)}} for n in range(5)]}


def submit(client, body=BODY, key="key-1"):
    return client.post(JOBS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def submit_bulk(client, body=BATCH, key="key-1"):
    return client.post(BULK, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def ids(response) -> list[str]:
    return [job["id"] for job in response.json()["jobs"]]


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


ECHO = handlers.get("echo")
SOON = timezone.now() + timedelta(days=1)


@pytest.mark.parametrize(
    ("first", "again"),
    [
        pytest.param(
            {"name": "a", "parameters": {"message": "hi"}},
            {
                "name": "a",
                "job_type": "echo",
                "description": "",
                "scheduled_time": None,
                "parameters": {"message": "hi"},
            },
            id="fields",
        ),
        pytest.param(
            {"name": "a", "job_type": "word_count", "parameters": {"text": "a b"}},
            {"name": "a", "job_type": "word_count", "parameters": {"text": "a b", "top": 10}},
            id="parameters",
        ),
        pytest.param(
            {"name": "a"},
            {"name": "a", "max_retries": ECHO.max_retries, "timeout_seconds": ECHO.timeout_seconds},
            id="the type's limits",
        ),
        pytest.param(
            {"name": "a", "scheduled_time": SOON.isoformat()},
            {"name": "a", "scheduled_time": SOON.astimezone(timezone.get_fixed_timezone(120))},
            id="time zone",
        ),
    ],
)
def test_spelling_out_a_default_is_the_same_request(auth_client, first, again):
    created = submit(auth_client, first)

    repeated = submit(auth_client, again)

    assert (created.status_code, repeated.status_code) == (201, 200)
    assert repeated.json()["id"] == created.json()["id"]


def test_a_value_other_than_the_default_is_another_request(auth_client):
    submit(auth_client, {"name": "a", "job_type": "word_count", "parameters": {"text": "a"}})

    other = {"name": "a", "job_type": "word_count", "parameters": {"text": "a", "top": 3}}

    assert submit(auth_client, other).status_code == 409


def test_a_bulk_request_sent_twice_with_one_key_returns_the_first_batch(auth_client):
    first = submit_bulk(auth_client)
    again = submit_bulk(auth_client)

    assert (first.status_code, again.status_code) == (201, 200)
    assert ids(again) == ids(first)
    assert again.json()["count"] == 5
    assert [job["name"] for job in again.json()["jobs"]] == [f"job {n}" for n in range(5)]
    assert Job.objects.count() == 5


def test_a_bulk_key_with_another_body_is_a_conflict(auth_client):
    submit_bulk(auth_client)
    reordered = {"jobs": list(reversed(BATCH["jobs"]))}

    other = submit_bulk(auth_client, reordered)

    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 5


def test_a_key_belongs_to_one_request_whichever_endpoint_it_was_sent_to(auth_client):
    single = submit(auth_client, BATCH["jobs"][0], key="single")
    bulk = submit_bulk(auth_client, {"jobs": BATCH["jobs"][:1]}, key="bulk")

    assert submit_bulk(auth_client, {"jobs": BATCH["jobs"][:1]}, key="single").status_code == 409
    assert submit(auth_client, BATCH["jobs"][0], key="bulk").status_code == 409
    assert (single.status_code, bulk.status_code) == (201, 201)


@pytest.mark.django_db(transaction=True)
def test_racing_bulk_requests_with_one_key_make_one_batch(verified_user):
    def send():
        client = APIClient()
        client.force_authenticate(verified_user)
        response = submit_bulk(client)
        return response.status_code, ids(response)

    answers = run_together(4, send)

    assert sorted(status for status, _ in answers) == [200, 200, 200, 201]
    assert len({tuple(batch) for _, batch in answers}) == 1
    assert Job.objects.count() == 5


def test_a_bulk_retry_after_a_scheduled_time_passed_still_returns_the_batch(auth_client):
    soon = timezone.now() + timedelta(seconds=5)
    batch = {"jobs": [{"name": "later", "scheduled_time": soon.isoformat()}]}
    first = submit_bulk(auth_client, batch)

    with time_machine.travel(soon + timedelta(minutes=1)):
        again = submit_bulk(auth_client, batch)

    assert again.status_code == 200
    assert ids(again) == ids(first)


def test_a_keyed_bulk_request_still_stores_its_jobs_in_one_insert(auth_client):
    with CaptureQueriesContext(connection) as queries:
        submit_bulk(auth_client)

    # On PostgreSQL the INSERT is inside the statement that also records the jobs' events.
    inserts = [q for q in queries.captured_queries if 'INSERT INTO "jobs_job"' in q["sql"]]
    assert len(inserts) == 1
