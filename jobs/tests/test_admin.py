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
