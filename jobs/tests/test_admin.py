import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client, user_factory):
    staff = user_factory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client


def test_job_list_and_detail_render_for_staff(admin_client_logged_in, job_result_factory):
    result = job_result_factory()

    listing = admin_client_logged_in.get("/admin/jobs/job/")
    detail = admin_client_logged_in.get(f"/admin/jobs/job/{result.job_id}/change/")

    assert listing.status_code == 200
    assert detail.status_code == 200
    assert str(result.job_id).encode() in listing.content


def test_only_name_and_description_are_editable(admin_client_logged_in, job_factory):
    job = job_factory(parameters={"message": "keep"})

    admin_client_logged_in.post(
        f"/admin/jobs/job/{job.pk}/change/",
        {
            "name": "renamed",
            "description": "",
            "parameters": '{"message": "changed"}',
            "result-TOTAL_FORMS": "0",
            "result-INITIAL_FORMS": "0",
        },
    )

    job.refresh_from_db()
    assert job.name == "renamed"
    assert job.parameters == {"message": "keep"}


def test_cancel_action_cancels_active_jobs_and_skips_finished_ones(
    admin_client_logged_in, job_factory
):
    pending = job_factory()
    done = job_factory(status=Job.Status.COMPLETED)

    admin_client_logged_in.post(
        "/admin/jobs/job/",
        {"action": "cancel_jobs", "_selected_action": [pending.pk, done.pk]},
    )

    pending.refresh_from_db()
    done.refresh_from_db()
    assert pending.status == Job.Status.CANCELLED
    assert done.status == Job.Status.COMPLETED


def test_retry_action_skips_jobs_whose_owner_is_at_the_cap(
    admin_client_logged_in, job_factory, user_factory, settings
):
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    owner = user_factory()
    first, second = job_factory.create_batch(2, owner=owner, status=Job.Status.FAILED)

    response = admin_client_logged_in.post(
        "/admin/jobs/job/",
        {"action": "retry_jobs", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Skipped 1 job(s) whose owner already has" in response.content.decode()
    statuses = Job.objects.filter(owner=owner).values_list("status", flat=True)
    assert sorted(statuses) == [Job.Status.FAILED, Job.Status.PENDING]


def test_json_nested_too_deeply_to_decode_still_shows(
    admin_client_logged_in, job_factory, job_result_factory
):
    # Stored before nesting was limited: deep enough to fail to decode on the admin's stack.
    deep = 0
    for _ in range(929):
        deep = [deep]
    job = job_factory(parameters={"message": "", "data": deep}, status=Job.Status.COMPLETED)
    result = job_result_factory(job=job, output={"message": "", "data": deep})

    pages = [
        "/admin/jobs/job/",
        f"/admin/jobs/job/{job.pk}/change/",
        "/admin/jobs/jobresult/",
        f"/admin/jobs/jobresult/{result.pk}/change/",
    ]
    responses = {page: admin_client_logged_in.get(page) for page in pages}

    assert {page: response.status_code for page, response in responses.items()} == dict.fromkeys(
        pages, 200
    )
    assert b"[[[[[[[[" in responses[f"/admin/jobs/job/{job.pk}/change/"].content


def test_parameters_and_output_show_as_json(admin_client_logged_in, job_result_factory):
    result = job_result_factory(job__parameters={"message": "h\u00e9"}, output={"words": [2]})

    page = admin_client_logged_in.get(f"/admin/jobs/job/{result.job_id}/change/").content.decode()

    assert "{&quot;message&quot;: &quot;h\u00e9&quot;}" in page
    assert "{&quot;words&quot;: [2]}" in page


def test_the_result_list_shows_sizes_without_loading_outputs(
    admin_client_logged_in, job_result_factory
):
    result = job_result_factory(output={"text": "a needle in a large output"})

    with CaptureQueriesContext(connection) as queries:
        listing = admin_client_logged_in.get("/admin/jobs/jobresult/")
    detail = admin_client_logged_in.get(f"/admin/jobs/jobresult/{result.pk}/change/")

    assert listing.status_code == 200
    assert not [q["sql"] for q in queries if '"jobs_jobresult"."output"' in q["sql"]]
    assert f">{result.output_bytes}<".encode() in listing.content
    assert b"a needle in a large output" in detail.content
