"""Flower as the Procfile runs it, against the test Redis, and served to staff at /flower/."""

import base64
import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid

import pytest
from celery import states
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from job_system.celery import app as celery_app
from jobs import queue
from jobs.models import Job
from jobs.tests.live import subprocess_env, wait_for
from scripts.localredis import free_port
from scripts.stack import procfile_process

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CREDENTIALS = "flower:test-flower-password"
HOUSEKEEPING_TASKS = (
    "jobs.tasks.dispatch_due_jobs",
    "jobs.tasks.reap_stale_jobs",
    "users.tasks.purge_expired_codes",
    "users.tasks.flush_expired_tokens",
)


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
def flower(celery_log_dir, settings):
    """The Procfile's Flower on a free port; the web's settings point at it. Yields its URL."""
    port = free_port()
    env = subprocess_env(FLOWER_BASIC_AUTH=CREDENTIALS, FLOWER_PORT=str(port))
    env.pop("FLOWER_ADDRESS", None)  # The Procfile's default address.
    process = procfile_process("flower", env, celery_log_dir).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: not process.alive or get(f"{base}/flower/healthcheck")[0] == 200,
            timeout=30,
            message="Flower did not answer",
        )
        assert process.alive, process.log_tail()
        settings.FLOWER_URL = base
        settings.FLOWER_BASIC_AUTH = CREDENTIALS
        yield base
    finally:
        process.stop()


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(is_staff=True))
    return client


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def flower_tasks(flower: str, task_name: str) -> dict:
    status, body = get(f"{flower}/flower/api/tasks?taskname={task_name}")
    assert status == 200, body
    return json.loads(body)


def flower_run_job_task_for(flower: str, job: Job) -> dict | None:
    tasks = flower_tasks(flower, queue.RUN_JOB_TASK)
    return next((t for t in tasks.values() if str(job.pk) in str(t.get("args"))), None)


def non_loopback_address() -> str | None:
    """This machine's address on its way out (a UDP connect sends nothing), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up.
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


# --- Flower itself, on loopback ----------------------------------------------------------------


def test_flower_asks_for_the_password_from_flower_basic_auth(flower):
    assert get(f"{flower}/flower/", credentials=None)[0] == 401
    assert get(f"{flower}/flower/", credentials="flower:wrong")[0] == 401
    assert get(f"{flower}/flower/api/tasks", credentials=None)[0] == 401
    assert get(f"{flower}/flower/")[0] == 200


def test_flower_serves_its_metrics_without_a_password_so_it_listens_on_loopback_only(flower):
    # Flower 2.2 does not guard /metrics (or /healthcheck) with basic auth.
    status, text = get(f"{flower}/flower/metrics", credentials=None)
    assert status == 200
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"flower_events", "flower_worker_online"} <= families, sorted(families)

    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    port = int(flower.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, port), timeout=5).close()


# --- Through the web's /flower/ ----------------------------------------------------------------


def test_staff_see_flowers_dashboard_its_files_and_its_api_through_the_web(flower, staff_client):
    page = staff_client.get("/flower/")
    assert page.status_code == 200
    html = body_of(page).decode()
    assert 'id="url_prefix"' in html

    assets = set(re.findall(r'(?:src|href)="(/flower/static/[^"]+)"', html))
    assert len(assets) >= 5, html
    for asset in assets:
        answer = staff_client.get(asset)
        assert answer.status_code == 200, asset
        assert len(body_of(answer)) == int(answer["Content-Length"]) > 0, asset

    workers = staff_client.get("/flower/api/workers")
    assert workers.status_code == 200
    assert isinstance(json.loads(body_of(workers)), dict)


def test_superusers_can_use_flowers_controls_from_its_own_pages(flower, client, user_factory):
    client.force_login(user_factory(is_staff=True, is_superuser=True))
    task_id = str(uuid.uuid4())  # Revoking a task that does not exist changes nothing.

    response = client.post(f"/flower/api/task/revoke/{task_id}", HTTP_SEC_FETCH_SITE="same-origin")

    assert response.status_code == 200
    assert task_id in body_of(response).decode()


def test_anonymous_users_get_nothing_of_flowers_through_the_web(flower, staff_client):
    anonymous = Client()
    for path in ("", "metrics", "healthcheck", "api/workers", "api/tasks"):
        response = anonymous.get(f"/flower/{path}")
        assert response.status_code == 403, path
        assert response.json()["code"] == "not_authenticated"
    # Nor do staff get its unguarded pages: only Prometheus, where Flower runs, needs them.
    assert staff_client.get("/flower/metrics").status_code == 404
    assert staff_client.get("/flower/healthcheck").status_code == 404


def test_a_web_process_with_another_flower_password_gets_a_502_not_a_login_prompt(
    flower, staff_client, settings
):
    settings.FLOWER_BASIC_AUTH = "flower:not-the-password"

    response = staff_client.get("/flower/")

    assert response.status_code == 502
    assert response.json()["code"] == "flower_refused"
    assert "WWW-Authenticate" not in response


# --- What Flower shows ---------------------------------------------------------------------


def run_a_job_and_look_it_up(flower: str, publish) -> dict | None:
    """Have `publish` send a new due job on its way; return its run_job task in Flower."""
    job = Job.objects.get(pk=publish())
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).exists(),
        timeout=30,
        message="the job did not complete",
    )
    deadline = time.monotonic() + 2  # Flower takes the events in soon after the job
    while time.monotonic() < deadline:
        # The task-succeeded event comes a moment after the job's row says completed.
        task = flower_run_job_task_for(flower, job)
        if task and task.get("state") in states.READY_STATES:
            return task
        time.sleep(0.1)
    return None


def test_flower_lists_a_job_the_live_worker_ran_by_its_task_name(flower, live_worker, job_factory):
    # Workers send no task events until Flower switches them on (CELERY_TASK_EVENTS is off by
    # default), which it does by itself every few seconds: jobs run before that go unseen.
    def publish():
        job = job_factory(job_type="echo")
        queue.publish([queue.message_for(job)])
        return job.pk

    task = wait_for(
        lambda: run_a_job_and_look_it_up(flower, publish),
        timeout=60,
        message="Flower never saw a job",
    )
    assert task["name"] == queue.RUN_JOB_TASK
    assert task["state"] == "SUCCESS"


def test_flower_sees_the_jobs_but_none_of_the_housekeeping(
    flower, live_worker, live_housekeeping, job_factory
):
    # What Flower does every few seconds: switch task events on in every worker that listens.
    # The job worker's reply shows the broadcast has gone out.
    replies = celery_app.control.enable_events(reply=True, timeout=2)
    assert replies, "no worker answered"
    assert not any(name.startswith("housekeeping@") for reply in replies for name in reply)

    def dispatch():
        job = job_factory(job_type="echo", enqueued_at=None)  # due, waiting for the dispatcher
        celery_app.send_task("jobs.tasks.dispatch_due_jobs")  # to the housekeeping worker
        return job.pk

    # Twice: by the second job's events, any event of the first dispatch has arrived.
    for _ in range(2):
        wait_for(
            lambda: run_a_job_and_look_it_up(flower, dispatch),
            timeout=60,
            message="Flower never saw a job the housekeeping worker dispatched",
        )
    for task_name in HOUSEKEEPING_TASKS:
        assert flower_tasks(flower, task_name) == {}, task_name
    # Its heartbeats still reach Flower, which lists it as online, with no task counted.
    status, body = get(f"{flower}/flower/workers?json=1")
    assert status == 200, body
    listed = {worker["hostname"]: worker for worker in json.loads(body)["data"]}
    housekeeping = next(w for name, w in listed.items() if name.startswith("housekeeping@"))
    assert housekeeping["status"] is True
    assert not [key for key in housekeeping if key.startswith("task-")], housekeeping
