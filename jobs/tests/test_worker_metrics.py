"""A real worker in production's configuration for metrics and logs.

Its two prefork children run jobs and write their metrics to a shared folder
(PROMETHEUS_MULTIPROC_DIR); its main process serves them on WORKER_METRICS_PORT; /metrics in
a web process on the same host adds up the same files; its log is JSON (LOG_FORMAT=json).
"""

import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from job_system.celery import app as celery_app
from job_system.tests.scrape import METRICS_TOKEN, parse, scrape, value
from jobs import queue
from jobs.models import Job
from jobs.tests.live import start_worker, wait_for
from scripts.localredis import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def pids_writing(folder: Path) -> set[str]:
    """Processes with metrics files in the folder: prometheus_client names them <kind>_<pid>.db."""
    return {re.sub(r"^\w+?_(\d+)\.db$", r"\1", path.name) for path in folder.glob("*.db")}


@pytest.fixture
def metrics_worker(celery_log_dir, tmp_path):
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    port = free_port()
    folder = tmp_path / "prometheus"
    worker = start_worker(
        name,
        celery_log_dir,
        queues=name,
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "WORKER_METRICS_PORT": str(port),
            "METRICS_TOKEN": METRICS_TOKEN,
            "LOG_FORMAT": "json",
        },
    )
    yield {
        "queue": name,
        "url": f"http://127.0.0.1:{port}/metrics",
        "folder": folder,
        "log": worker.log_path,
    }
    worker.stop()


def run_on(worker: dict, job: Job) -> Job:
    celery_app.send_task(queue.RUN_JOB_TASK, args=[str(job.pk)], queue=worker["queue"])
    return job


def test_a_worker_host_serves_the_job_metrics_of_all_its_processes(
    metrics_worker, job_factory, client, settings
):
    published = {"enqueued_at": timezone.now()}  # no dispatcher publishes them elsewhere
    # Long enough that the second job is sent while the first still runs, however busy the
    # machine: they must run side by side, in two processes.
    jobs = [job_factory(job_type="sleep", parameters={"seconds": 3}, **published) for _ in range(2)]
    sleepers = [run_on(metrics_worker, job) for job in jobs]
    for job in sleepers:
        wait_for(
            lambda job=job: Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).exists(),
            timeout=30,
            message="a sleep job did not complete",
        )

    status, text = fetch(metrics_worker["url"], METRICS_TOKEN)

    assert status == 200
    samples = parse(text)
    assert value(samples, "jobs_completed_total", job_type="sleep") == 2
    assert value(samples, "job_run_seconds_count", job_type="sleep") == 2
    assert value(samples, "job_run_seconds_bucket", job_type="sleep", le="0.5") == 0
    assert value(samples, "job_queue_wait_seconds_count", job_type="sleep") == 2
    # The two jobs ran side by side, so in the worker's two child processes.
    assert len(pids_writing(metrics_worker["folder"])) >= 2
    assert fetch(metrics_worker["url"])[0] == 403
    assert fetch(metrics_worker["url"], "wrong-token")[0] == 403

    # A web process on the same host reads the same folder, and adds the database gauges.
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.PROMETHEUS_MULTIPROC_DIR = str(metrics_worker["folder"])
    web = scrape(client)
    assert value(web, "jobs_completed_total", job_type="sleep") == 2
    assert ("jobs_pending", frozenset({"job_type": "sleep"}.items())) in web


def test_a_worker_logs_json_lines_that_carry_the_job(metrics_worker, job_factory):
    job = run_on(metrics_worker, job_factory(job_type="echo", enqueued_at=timezone.now()))
    log = metrics_worker["log"]
    wait_for(
        lambda: "job completed in" in log.read_text(),
        timeout=30,
        message="the echo job did not complete",
    )

    lines = log.read_text().splitlines()
    # Celery prints its banner as text; from the "ready" line on, every line is one object.
    ready = next(i for i, line in enumerate(lines) if line.startswith("{") and "ready." in line)
    entries = [json.loads(line) for line in lines[ready:]]
    about_job = [entry for entry in entries if entry.get("job_id") == str(job.pk)]
    messages = {entry["message"] for entry in about_job}
    assert "job started" in messages
    assert any(message.startswith("job completed in") for message in messages)
    for entry in about_job:
        assert entry["job_type"] == "echo", entry
        assert entry["attempt"] == 1, entry
        assert entry["level"] in {"INFO", "WARNING"}
