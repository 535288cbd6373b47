"""How large a result may be, and result lists that stay within a few MB a page."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import services
from jobs.models import Job, JobResult
from jobs.pagination import ResultPagination
from jobs.services.execution import result_size

pytestmark = pytest.mark.django_db

JOBS = "/api/jobs/"
RESULTS = "/api/job-results/"


def submit_and_run(client, **parameters) -> dict:
    created = client.post(
        JOBS, {"name": "echo", "job_type": "echo", "parameters": parameters}, format="json"
    )
    services.job_run(job_id=created.data["id"], worker="test-worker")
    return client.get(f"{JOBS}{created.data['id']}/").json()


def test_a_result_over_the_limit_fails_the_job_with_its_size_and_the_limit(auth_client, settings):
    settings.JOB_MAX_RESULT_BYTES = 1000
    message = "x" * 1000  # {"message":"xxx…","data":null}: 1,026 bytes

    job = submit_and_run(auth_client, message=message)

    assert job["status"] == "failed"
    assert job["error_message"] == (
        "The result is too large: 1,026 bytes of JSON, over the limit of 1,000 bytes."
    )
    assert [a["outcome"] for a in job["attempt_history"]] == ["failed"]
    assert auth_client.get(f"{JOBS}{job['id']}/result/").status_code == 400
    assert not JobResult.objects.exists()


def test_an_oversize_result_is_not_retried(auth_client, settings):
    settings.JOB_MAX_RESULT_BYTES = 10

    job = submit_and_run(auth_client, message="hello")

    assert (job["status"], job["attempts"]) == ("failed", 1)


def test_a_result_within_the_limit_is_stored_with_its_size_in_utf8_bytes(auth_client, settings):
    settings.JOB_MAX_RESULT_BYTES = 31
    # Compact JSON, the characters as themselves: é is two bytes, € three (escaped as \u00e9
    # and \u20ac they would take 39).
    expected = '{"message":"é€","data":null}'.encode()

    job = submit_and_run(auth_client, message="é€")
    result = auth_client.get(f"{JOBS}{job['id']}/result/").json()

    assert job["status"] == "completed"
    assert result["output"] == {"message": "é€", "data": None}
    assert result["output_bytes"] == len(expected) == 31


def make_results(job_result_factory, owner, sizes: list[int], *, start=None) -> list[JobResult]:
    """Results with outputs of the given sizes, newest first, a second apart."""
    start = start or timezone.now()
    results = []
    for position, size in enumerate(sizes):
        output = {"text": "x" * (size - len('{"text":""}'))}
        assert result_size(output) == size
        results.append(
            job_result_factory(
                job__owner=owner, output=output, completed_at=start - timedelta(seconds=position)
            )
        )
    return results


def walk(client, url: str, *, link: str = "next", params: dict | None = None) -> list[dict]:
    """Every page from `url` on, following `link`: each page's body."""
    pages = [client.get(url, params or {}).data]
    while pages[-1][link]:
        pages.append(client.get(pages[-1][link]).data)
    return pages


def ids(pages: list[dict]) -> list[list[int]]:
    return [[result["id"] for result in page["results"]] for page in pages]


def test_a_page_of_results_ends_before_its_outputs_pass_the_budget(
    auth_client, verified_user, job_result_factory, monkeypatch
):
    monkeypatch.setattr(ResultPagination, "max_page_bytes", 1000)
    results = make_results(job_result_factory, verified_user, [400, 400, 400, 900, 1500, 100, 50])

    pages = walk(auth_client, RESULTS, params={"page_size": 100})

    # The third would pass 1,000, and so would the last; the output over the budget is not
    # loaded, and counts for nothing.
    assert [[r["output_bytes"] for r in page["results"]] for page in pages] == [
        [400, 400],
        [400],
        [900, 1500, 100],
        [50],
    ]
    assert [pk for page in ids(pages) for pk in page] == [result.pk for result in results]
    listed = [r["output"] for page in pages for r in page["results"]]
    assert listed == [r.output if r.output_bytes <= 1000 else None for r in results]


def test_previous_links_walk_back_over_the_same_pages(
    auth_client, verified_user, job_result_factory, monkeypatch
):
    monkeypatch.setattr(ResultPagination, "max_page_bytes", 1000)
    make_results(job_result_factory, verified_user, [300] * 7)

    forward = walk(auth_client, RESULTS, params={"page_size": 5})
    backward = walk(auth_client, forward[-1]["previous"], link="previous")

    assert [len(page) for page in ids(forward)] == [3, 3, 1]
    assert ids(backward) == ids(forward[-2::-1])
    assert backward[-1]["previous"] is None


def test_results_that_share_a_completion_time_are_each_listed_once(
    auth_client, verified_user, job_result_factory, monkeypatch
):
    monkeypatch.setattr(ResultPagination, "max_page_bytes", 1000)
    now = timezone.now()
    same_time = [
        job_result_factory(job__owner=verified_user, completed_at=now, output={"t": "x" * 400})
        for _ in range(5)
    ]

    pages = ids(walk(auth_client, RESULTS, params={"page_size": 4}))

    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(pk for page in pages for pk in page) == sorted(r.pk for r in same_time)


def test_eight_results_at_the_size_limit_come_four_to_a_page(
    auth_client, verified_user, job_result_factory, settings
):
    # The request: eight large results and page_size=100 answered 156 MB at once.
    near_limit = settings.JOB_MAX_RESULT_BYTES - 100
    make_results(job_result_factory, verified_user, [near_limit] * 8)

    first = auth_client.get(RESULTS, {"page_size": 100})
    second = auth_client.get(first.data["next"])

    assert [len(first.data["results"]), len(second.data["results"])] == [4, 4]
    assert second.data["next"] is None
    assert len(first.content) < ResultPagination.max_page_bytes + 10_000


@pytest.mark.parametrize("count", [3, 30])
def test_the_result_list_runs_the_same_two_queries_for_any_page(
    auth_client, verified_user, job_result_factory, django_assert_num_queries, count
):
    job_result_factory.create_batch(count, job__owner=verified_user)

    # One for the page's sizes and positions, one for its outputs.
    with django_assert_num_queries(2):
        response = auth_client.get(RESULTS, {"page_size": 100})

    assert len(response.data["results"]) == count


def test_an_output_over_the_page_budget_is_listed_as_null_and_served_whole_on_its_own(
    auth_client, verified_user, job_result_factory, monkeypatch
):
    # Results stored before the size limit, or under a higher one, can be that large.
    monkeypatch.setattr(ResultPagination, "max_page_bytes", 1000)
    [result] = make_results(job_result_factory, verified_user, [5000])

    with CaptureQueriesContext(connection) as queries:
        listed = auth_client.get(RESULTS).data["results"]
    one = auth_client.get(f"{RESULTS}{result.pk}/").data
    of_job = auth_client.get(f"{JOBS}{result.job_id}/result/").data

    assert [(r["output"], r["output_bytes"]) for r in listed] == [(None, 5000)]
    assert not [q for q in queries if '"jobs_jobresult"."output"' in q["sql"]]
    assert one["output"] == of_job["output"] == result.output
    assert one["output_bytes"] == of_job["output_bytes"] == 5000


@pytest.mark.django_db(transaction=True)
def test_the_migration_sizes_results_stored_before_it(job_result_factory):
    output = {"text": "é" * 100, "items": [1, 2, 3]}
    job = job_result_factory(output=output).job
    executor = MigrationExecutor(connection)
    executor.migrate([("jobs", "0008_idempotency_keys_for_batches")])
    try:
        executor.loader.build_graph()
        executor.migrate([("jobs", "0009_jobresult_output_bytes")])
    finally:
        executor.loader.build_graph()
        # Every app's: going back, the apps that depend on jobs (events, webhooks) went too.
        executor.migrate(executor.loader.graph.leaf_nodes())

    stored = JobResult.objects.get(job=job).output_bytes
    # The stored text has spaces that compact JSON has not, and on SQLite \u escapes (six
    # bytes for é's two): over, never under.
    assert result_size(output) <= stored <= 3 * result_size(output) + 20
    assert Job.objects.filter(pk=job.pk).exists()
