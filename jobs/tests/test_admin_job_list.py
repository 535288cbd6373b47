"""The admin's job list: short ids, search by an id prefix through the index, attempt times."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import services
from jobs.models import JobAttempt

pytestmark = pytest.mark.django_db

LIST = "/admin/jobs/job/"


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    return client


def listed_names(client, search: str) -> set[str]:
    response = client.get(LIST, {"q": search})
    assert response.status_code == 200
    return {job.name for job in response.context["cl"].result_list}


def test_the_list_shows_the_first_8_characters_of_each_id_and_the_whole_id_on_hover(
    staff_client, job_factory
):
    job = job_factory()
    short = str(job.pk)[:8]

    page = staff_client.get(LIST).content.decode()

    assert f'<span title="{job.pk}">{short}</span>' in page


def test_staff_find_a_job_by_the_first_8_or_more_characters_of_its_id(staff_client, job_factory):
    job_factory(id=uuid.UUID("7f3a9c10-0000-4000-8000-000000000000"), name="wanted")
    job_factory(id=uuid.UUID("7f3a9c11-0000-4000-8000-000000000000"), name="neighbour")

    assert listed_names(staff_client, "7f3a9c10") == {"wanted"}
    assert listed_names(staff_client, " 7F3A9C10-0000-4 ") == {"wanted"}
    assert listed_names(staff_client, "7f3a9c10-0000-4000-8000-000000000000") == {"wanted"}
    assert listed_names(staff_client, "7f3a9c1") == set()  # Too short: a word of a name.


def test_other_searches_still_look_in_names_and_owner_emails(
    staff_client, job_factory, user_factory
):
    job_factory(name="nightly report")
    job_factory(name="other", owner=user_factory(email="grace@example.com"))

    assert listed_names(staff_client, "report") == {"nightly report"}
    assert listed_names(staff_client, "grace@") == {"other"}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
def test_an_id_prefix_search_reads_the_primary_key_index_not_the_table(
    staff_client, job_factory, verified_user
):
    jobs = job_factory.create_batch(500, owner=verified_user)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")

    with CaptureQueriesContext(connection) as captured:
        assert listed_names(staff_client, str(jobs[0].pk)[:8]) == {jobs[0].name}

    plans = []
    for query in captured.captured_queries:
        if 'FROM "jobs_job"' in query["sql"]:
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN {query['sql']}")
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    assert len(plans) == 2  # The count and the page.
    for plan in plans:
        assert "jobs_job_pkey" in plan, plan
        assert "Seq Scan on jobs_job" not in plan, plan


def test_attempt_times_show_seconds(staff_client, job_factory):
    job = job_factory(job_type="fail", parameters={"message": "nope", "retryable": False})
    services.job_run(job_id=job.pk, worker="worker-a@host")
    JobAttempt.objects.filter(job=job).update(
        started_at=datetime(2026, 1, 4, 5, 6, 7, tzinfo=UTC),
        finished_at=datetime(2026, 1, 4, 5, 6, 9, tzinfo=UTC),
    )

    page = staff_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()

    assert "<td>Jan. 4, 2026, 05:06:07</td><td>Jan. 4, 2026, 05:06:09</td>" in page
