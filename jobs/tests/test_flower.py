"""Flower as the Procfile runs it: basic auth from FLOWER_BASIC_AUTH, against the test Redis."""

import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs import queue
from jobs.models import Job
from jobs.tests.live import celery_process, subprocess_env, wait_for
from scripts.localredis import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CREDENTIALS = "flower:test-flower-password"


def get(url: str, *, credentials: str | None = CREDENTIALS) -> tuple[int, str]:
    headers = {}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return 0, ""  # not listening yet


@pytest.fixture
def flower(celery_log_dir):
    """A Flower process on a free port, started the way the Procfile starts it."""
    port = free_port()
    process = celery_process(
        "flower",
        ["flower", f"--port={port}", "--address=127.0.0.1"],
        celery_log_dir,
        subprocess_env(FLOWER_BASIC_AUTH=CREDENTIALS),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: not process.alive or get(f"{base}/healthcheck")[0] == 200,
            timeout=30,
            message="Flower did not answer",
        )
        assert process.alive, process.log_tail()
        yield base
    finally:
        process.stop()


def test_flower_asks_for_the_password_from_flower_basic_auth(flower):
    assert get(f"{flower}/", credentials=None)[0] == 401
    assert get(f"{flower}/", credentials="flower:wrong")[0] == 401
    assert get(f"{flower}/api/tasks", credentials=None)[0] == 401
    assert get(f"{flower}/")[0] == 200


def test_flower_serves_prometheus_metrics_at_slash_metrics(flower):
    status, text = get(f"{flower}/metrics")

    assert status == 200
    families = {family.name for family in text_string_to_metric_families(text)}
    # Declared from the start; their samples appear as events come in.
    assert {"flower_events", "flower_worker_online"} <= families, sorted(families)


def test_flower_metrics_are_served_without_a_password(flower):
    # Flower 2.2 does not guard /metrics (or /healthcheck) with basic auth, which is why the
    # Procfile binds it to 127.0.0.1 and the README says to keep it off public addresses.
    assert get(f"{flower}/metrics", credentials=None)[0] == 200


def test_flower_lists_a_job_the_live_worker_ran_by_its_task_name(flower, live_worker, job_factory):
    # Workers send no task events until Flower switches them on (CELERY_TASK_EVENTS is off by
    # default), which it does by itself every few seconds: jobs run before that go unseen.
    def run_job_task_for(job: Job) -> dict | None:
        status, body = get(f"{flower}/api/tasks?taskname={queue.RUN_JOB_TASK}")
        tasks = json.loads(body) if status == 200 else {}
        return next((t for t in tasks.values() if str(job.pk) in str(t.get("args"))), None)

    def run_a_job_and_look_it_up() -> dict | None:
        job = job_factory(job_type="echo")
        queue.publish([queue.message_for(job)])
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).exists(),
            timeout=30,
            message="the job did not complete",
        )
        deadline = time.monotonic() + 2  # Flower takes the events in soon after the job
        while time.monotonic() < deadline:
            if task := run_job_task_for(job):
                return task
            time.sleep(0.1)
        return None

    task = wait_for(run_a_job_and_look_it_up, timeout=60, message="Flower never saw a job")
    assert task["name"] == queue.RUN_JOB_TASK
    assert task["state"] == "SUCCESS"
