from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import Job

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"


def create(client, **body):
    body.setdefault("name", "a job")
    return client.post(JOBS, body, format="json")


def test_submitting_a_job_stores_it_pending_with_validated_parameters(auth_client, verified_user):
    response = create(auth_client, job_type="word_count", parameters={"text": "a b a"})

    assert response.status_code == 201
    job = Job.objects.get(pk=response.data["id"])
    assert job.owner == verified_user
    assert job.status == Job.Status.PENDING
    assert job.parameters == {"text": "a b a", "top": 10}
    assert response.data["status"] == "pending"


def test_job_type_defaults_to_echo(auth_client):
    response = create(auth_client)

    assert response.status_code == 201
    assert response.data["job_type"] == "echo"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "completed"),
        ("attempts", 7),
        ("progress", 100),
        ("error_message", "injected"),
        ("owner", 999),
        ("id", "00000000-0000-0000-0000-000000000001"),
    ],
)
def test_server_owned_fields_cannot_be_set_by_the_client(auth_client, verified_user, field, value):
    response = create(auth_client, **{field: value})

    assert response.status_code == 201
    job = Job.objects.get(pk=response.data["id"])
    assert job.status == Job.Status.PENDING
    assert job.attempts == 0
    assert job.progress == 0
    assert job.error_message == ""
    assert job.owner == verified_user
    assert str(job.pk) != "00000000-0000-0000-0000-000000000001"


def test_scheduled_time_in_the_past_is_refused_by_field(auth_client):
    past = timezone.now() - timedelta(minutes=1)

    response = create(auth_client, scheduled_time=past.isoformat())

    assert response.status_code == 400
    assert response.data["scheduled_time"][0].code == "past"
    assert not Job.objects.exists()


def test_a_future_scheduled_job_waits_for_the_dispatcher(auth_client):
    future = timezone.now() + timedelta(minutes=5)

    response = create(auth_client, scheduled_time=future.isoformat())

    assert response.status_code == 201
    job = Job.objects.get(pk=response.data["id"])
    assert job.run_after == future
    assert job.enqueued_at is None


def test_unknown_job_type_is_refused_by_field(auth_client):
    response = create(auth_client, job_type="mine_bitcoin")

    assert response.status_code == 400
    assert "job_type" in response.data


def test_bad_parameters_are_refused_under_parameters_by_field(auth_client):
    response = create(auth_client, job_type="sleep", parameters={"seconds": -1, "extra": 1})

    assert response.status_code == 400
    assert set(response.data["parameters"]) == {"seconds", "extra"}
    assert response.data["parameters"]["extra"][0].code == "unknown"


@pytest.mark.parametrize("parameters", [[1, 2], "text", 5])
def test_parameters_must_be_an_object(auth_client, parameters):
    response = create(auth_client, parameters=parameters)

    assert response.status_code == 400
    assert "parameters" in response.data


def test_missing_name_is_refused_by_field(auth_client):
    response = auth_client.post(JOBS, {}, format="json")

    assert response.status_code == 400
    assert response.data["name"][0].code == "required"


def test_malformed_json_gets_400_not_500(auth_client):
    response = auth_client.generic("POST", JOBS, "{not json", content_type="application/json")

    assert response.status_code == 400


def test_anonymous_requests_get_401(api_client, job_factory):
    job = job_factory()
    for method, url in [
        ("get", JOBS),
        ("post", JOBS),
        ("get", f"{JOBS}{job.pk}/"),
        ("get", "/api/job-results/"),
    ]:
        assert getattr(api_client, method)(url).status_code == 401, url


def test_unverified_users_get_403_on_job_endpoints(api_client, unverified_user, job_factory):
    job = job_factory(owner=unverified_user)
    api_client.force_authenticate(unverified_user)

    for method, url in [
        ("get", JOBS),
        ("post", JOBS),
        ("get", f"{JOBS}{job.pk}/"),
        ("post", f"{JOBS}{job.pk}/cancel/"),
        ("get", f"{JOBS}{job.pk}/result/"),
        ("get", f"{JOBS}summary/"),
        ("get", "/api/job-results/"),
    ]:
        response = getattr(api_client, method)(url)
        assert response.status_code == 403, url
        assert response.data["detail"].code == "email_not_verified"


def test_list_shows_only_my_jobs_newest_first(auth_client, verified_user, job_factory):
    older = job_factory(owner=verified_user, created_at=timezone.now() - timedelta(hours=1))
    newer = job_factory(owner=verified_user)
    job_factory()  # someone else's

    response = auth_client.get(JOBS)

    assert response.status_code == 200
    assert [job["id"] for job in response.data["results"]] == [str(newer.pk), str(older.pk)]


def test_list_can_be_ordered_oldest_first(auth_client, verified_user, job_factory):
    older = job_factory(owner=verified_user, created_at=timezone.now() - timedelta(hours=1))
    newer = job_factory(owner=verified_user)

    response = auth_client.get(JOBS, {"ordering": "created_at"})

    assert [job["id"] for job in response.data["results"]] == [str(older.pk), str(newer.pk)]


def test_list_filters_by_status_and_type(auth_client, verified_user, job_factory):
    wanted = job_factory(owner=verified_user, job_type="sleep", status=Job.Status.FAILED)
    job_factory(owner=verified_user, job_type="sleep")
    job_factory(owner=verified_user, status=Job.Status.FAILED)

    response = auth_client.get(JOBS, {"status": "failed", "job_type": "sleep"})

    assert [job["id"] for job in response.data["results"]] == [str(wanted.pk)]


def test_an_unknown_status_filter_is_refused_by_field(auth_client):
    response = auth_client.get(JOBS, {"status": "exploded"})

    assert response.status_code == 400
    assert "status" in response.data


def test_list_pages_with_a_cursor_and_caps_page_size(auth_client, verified_user, job_factory):
    job_factory.create_batch(5, owner=verified_user)

    first = auth_client.get(JOBS, {"page_size": 2})
    second = auth_client.get(first.data["next"])
    capped = auth_client.get(JOBS, {"page_size": 10_000})

    assert len(first.data["results"]) == 2
    assert len(second.data["results"]) == 2
    assert not {j["id"] for j in first.data["results"]} & {j["id"] for j in second.data["results"]}
    assert len(capped.data["results"]) == 5


def test_list_query_count_does_not_grow_with_jobs(
    auth_client, verified_user, job_factory, django_assert_max_num_queries
):
    job_factory.create_batch(30, owner=verified_user)

    with django_assert_max_num_queries(2):
        response = auth_client.get(JOBS, {"page_size": 30})

    assert len(response.data["results"]) == 30


def test_other_users_cannot_see_a_job(auth_client, job_factory):
    job = job_factory()  # owned by someone else

    assert auth_client.get(f"{JOBS}{job.pk}/").status_code == 404


def test_other_users_jobs_get_404_on_every_action(auth_client, job_factory):
    job = job_factory(status=Job.Status.FAILED)

    for method, suffix in [
        ("get", ""),
        ("delete", ""),
        ("post", "cancel/"),
        ("post", "retry/"),
        ("get", "result/"),
    ]:
        response = getattr(auth_client, method)(f"{JOBS}{job.pk}/{suffix}")
        assert response.status_code == 404, suffix
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED


def test_cancel_a_pending_job(auth_client, verified_user, job_factory):
    job = job_factory(owner=verified_user)

    response = auth_client.post(f"{JOBS}{job.pk}/cancel/")

    assert response.status_code == 200
    assert response.data["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.completed_at is not None


def test_delete_cancels_instead_of_removing(auth_client, verified_user, job_factory):
    job = job_factory(owner=verified_user, status=Job.Status.IN_PROGRESS)

    response = auth_client.delete(f"{JOBS}{job.pk}/")

    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


@pytest.mark.parametrize("finished", ["completed", "failed", "cancelled"])
def test_cancelling_a_finished_job_is_a_conflict(auth_client, verified_user, job_factory, finished):
    job = job_factory(owner=verified_user, status=finished)

    response = auth_client.post(f"{JOBS}{job.pk}/cancel/")

    assert response.status_code == 409
    job.refresh_from_db()
    assert job.status == finished


@pytest.mark.parametrize("finished", ["failed", "cancelled"])
def test_retry_requeues_a_failed_or_cancelled_job(
    auth_client, verified_user, job_factory, finished
):
    job = job_factory(
        owner=verified_user, status=finished, attempts=4, run_attempts=4, error_message="boom"
    )

    response = auth_client.post(f"{JOBS}{job.pk}/retry/")

    assert response.status_code == 200
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert (job.attempts, job.run, job.run_attempts) == (4, 2, 0)
    assert job.error_message == ""
    assert job.enqueued_at is not None


@pytest.mark.parametrize("state", ["pending", "in_progress", "completed"])
def test_retry_of_an_active_or_completed_job_is_a_conflict(
    auth_client, verified_user, job_factory, state
):
    job = job_factory(owner=verified_user, status=state)

    assert auth_client.post(f"{JOBS}{job.pk}/retry/").status_code == 409


def test_result_of_a_completed_job(auth_client, verified_user, job_result_factory):
    result = job_result_factory(job__owner=verified_user, output={"answer": 42})

    response = auth_client.get(f"{JOBS}{result.job_id}/result/")

    assert response.status_code == 200
    assert response.data["output"] == {"answer": 42}
    assert response.data["job"] == result.job_id


@pytest.mark.parametrize("state", ["pending", "in_progress", "failed", "cancelled"])
def test_result_of_an_unfinished_job_is_400(auth_client, verified_user, job_factory, state):
    job = job_factory(owner=verified_user, status=state)

    response = auth_client.get(f"{JOBS}{job.pk}/result/")

    assert response.status_code == 400
    assert response.data["status"] == state


def test_job_results_list_only_mine_and_filter_by_job(
    auth_client, verified_user, job_result_factory
):
    mine = job_result_factory(job__owner=verified_user)
    job_result_factory(job__owner=verified_user)
    theirs = job_result_factory()

    everything = auth_client.get("/api/job-results/")
    filtered = auth_client.get("/api/job-results/", {"job": str(mine.job_id)})

    assert len(everything.data["results"]) == 2
    assert [r["id"] for r in filtered.data["results"]] == [mine.pk]
    assert auth_client.get(f"/api/job-results/{mine.pk}/").status_code == 200
    assert auth_client.get(f"/api/job-results/{theirs.pk}/").status_code == 404


def test_summary_counts_my_jobs_by_status(auth_client, verified_user, job_factory):
    job_factory.create_batch(2, owner=verified_user)
    job_factory(owner=verified_user, status=Job.Status.FAILED)
    job_factory(status=Job.Status.FAILED)  # someone else's

    response = auth_client.get(f"{JOBS}summary/")

    assert response.data == {
        "total": 3,
        "pending": 2,
        "in_progress": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }


def test_job_types_lists_every_type_with_a_parameter_schema(api_client):
    response = api_client.get("/api/job-types/")

    assert response.status_code == 200
    by_name = {t["name"]: t for t in response.data}
    assert {"echo", "word_count", "checksum", "csv_summary", "primes", "sleep", "fail"} <= set(
        by_name
    )
    sleep = by_name["sleep"]["parameters_schema"]
    assert sleep["required"] == ["seconds"]
    assert sleep["properties"]["seconds"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 3600,
        "description": sleep["properties"]["seconds"]["description"],
    }


def test_errors_carry_a_machine_readable_code(verified_user, unverified_user, job_factory):
    finished = job_factory(owner=verified_user, status=Job.Status.COMPLETED)
    anonymous, unverified, verified = APIClient(), APIClient(), APIClient()
    unverified.force_authenticate(unverified_user)
    verified.force_authenticate(verified_user)

    assert anonymous.get(JOBS).json()["code"] == "not_authenticated"
    assert unverified.get(JOBS).json()["code"] == "email_not_verified"
    assert verified.post(f"{JOBS}{finished.pk}/cancel/").json()["code"] == "invalid_state"
