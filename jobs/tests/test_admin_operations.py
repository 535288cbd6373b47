"""The job admin at scale: bounded queries, estimated counts, stuck-job recovery, attempts."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import queue, services
from jobs.admin_pagination import EstimatedCountPaginator
from jobs.models import Job, JobAttempt

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="pg_class estimates exist on PostgreSQL only"
)


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    return client


def changelist_queries(client, url: str = "/admin/jobs/job/") -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return [query["sql"] for query in captured.captured_queries]


def test_the_job_list_runs_the_same_few_queries_however_many_jobs_and_owners(
    staff_client, job_factory, django_assert_max_num_queries
):
    job_factory.create_batch(3)
    few = changelist_queries(staff_client)
    job_factory.create_batch(60)  # each with its own owner

    with django_assert_max_num_queries(len(few)):
        response = staff_client.get("/admin/jobs/job/")

    assert response.status_code == 200
    assert len(few) <= 6


def test_the_job_list_never_scans_for_distinct_values_or_counts_the_whole_table_twice(
    staff_client, job_factory
):
    job_factory.create_batch(3)

    queries = changelist_queries(staff_client)
    filtered = changelist_queries(staff_client, "/admin/jobs/job/?job_type=sleep")

    assert not [sql for sql in queries + filtered if "DISTINCT" in sql.upper()]
    assert sum("COUNT(" in sql.upper() for sql in filtered) == 1  # no full count beside it


def test_the_job_type_filter_lists_registered_types_and_filters(staff_client, job_factory):
    sleeper = job_factory(job_type="sleep", parameters={"seconds": 1})
    echo = job_factory(job_type="echo")

    listing = staff_client.get("/admin/jobs/job/?job_type=sleep").content.decode()

    assert "?job_type=primes" in listing  # offered though no primes job exists
    assert str(sleeper.pk) in listing
    assert str(echo.pk) not in listing


@pytest.mark.skipif(connection.vendor == "postgresql", reason="counts for real elsewhere")
def test_the_paginator_counts_for_real_off_postgresql(job_factory):
    job_factory.create_batch(3)
    paginator = EstimatedCountPaginator(Job.objects.order_by("pk"), 100)
    paginator.exact_count_below = 0

    with CaptureQueriesContext(connection) as captured:
        count = paginator.count

    assert count == 3
    assert "COUNT(" in captured.captured_queries[-1]["sql"].upper()


def test_the_paginator_counts_a_filtered_list_for_real(job_factory):
    job_factory.create_batch(3)
    job_factory(job_type="sleep", parameters={"seconds": 1})
    paginator = EstimatedCountPaginator(Job.objects.filter(job_type="echo"), 100)
    paginator.exact_count_below = 0

    assert paginator.count == 3


@on_postgresql
def test_the_paginator_takes_the_planner_estimate_for_a_whole_postgresql_table(job_factory):
    job_factory.create_batch(5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")  # what autovacuum does as a table grows
    paginator = EstimatedCountPaginator(Job.objects.order_by("pk"), 100)
    paginator.exact_count_below = 0

    with CaptureQueriesContext(connection) as captured:
        count = paginator.count

    assert count == 5
    [query] = captured.captured_queries
    assert "pg_class" in query["sql"]
    assert "COUNT(" not in query["sql"].upper()


@on_postgresql
def test_a_small_or_never_analyzed_table_is_counted_for_real_on_postgresql(job_factory):
    job_factory.create_batch(2)
    paginator = EstimatedCountPaginator(Job.objects.order_by("pk"), 100)

    assert paginator.count == 2  # the estimate (0 or -1 here) is below exact_count_below


def stuck_jobs(job_factory) -> dict[str, Job]:
    now = timezone.now()
    lost_message = job_factory(
        enqueued_at=now - timedelta(hours=1), run_after=now - timedelta(hours=1)
    )
    lost_worker = job_factory(job_type="sleep", parameters={"seconds": 1}, max_retries=3)
    services.job_claim(job_id=lost_worker.pk, worker="gone@host")
    Job.objects.filter(pk=lost_worker.pk).update(lease_expires_at=now - timedelta(minutes=1))
    healthy_running = job_factory(job_type="sleep", parameters={"seconds": 1})
    services.job_claim(job_id=healthy_running.pk, worker="alive@host")
    just_published = job_factory(enqueued_at=now, run_after=now)
    # Its message waits in its queue, so the reaper's audit of the broker leaves it alone
    # however long this takes.
    queue.publish([queue.message_for(just_published)])
    return {
        "lost_message": lost_message,
        "lost_worker": lost_worker,
        "healthy_running": healthy_running,
        "just_published": just_published,
    }


def test_requeue_stuck_action_recovers_lost_messages_and_lost_workers_only(
    staff_client, job_factory, monkeypatch, django_capture_on_commit_callbacks
):
    jobs = stuck_jobs(job_factory)
    published: list[str] = []
    monkeypatch.setattr(
        queue, "publish", lambda messages: published.extend(str(m.job_id) for m in messages)
    )
    before = {name: Job.objects.get(pk=job.pk) for name, job in jobs.items()}

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/admin/jobs/job/",
            {"action": "requeue_stuck_jobs", "_selected_action": [j.pk for j in jobs.values()]},
            follow=True,
        )

    after = {name: Job.objects.get(pk=job.pk) for name, job in jobs.items()}
    assert published == [str(jobs["lost_message"].pk)]
    assert after["lost_message"].enqueued_at > before["lost_message"].enqueued_at
    assert after["lost_worker"].status == Job.Status.PENDING
    assert after["lost_worker"].attempt_log.get().outcome == JobAttempt.Outcome.LOST
    assert after["healthy_running"].status == Job.Status.IN_PROGRESS
    assert after["just_published"].enqueued_at == before["just_published"].enqueued_at
    assert "Republished 1 pending job(s)" in response.content.decode()
    assert "requeued 1 and failed 0" in response.content.decode()


def test_the_job_page_shows_each_attempt_read_only(staff_client, job_factory):
    job = job_factory(job_type="fail", parameters={"message": "nope", "retryable": True})
    services.job_run(job_id=job.pk, worker="worker-a@host")

    page = staff_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()

    assert "worker-a@host" in page
    assert "Failed" in page
    assert "nope" in page
    assert 'name="attempt_log' not in page  # a table, not a formset
