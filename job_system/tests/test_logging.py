"""Log output as the project's LOGGING setting formats it, and the job fields on each line."""

import io
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework.test import APIClient

from job_system.logging import job_log_scope
from jobs import handlers, services
from jobs.models import Job
from jobs.tests.live import subprocess_env, wait_for
from scripts import localredis
from scripts.stack import ManagedProcess

JOB_FIELDS = {"job_id", "job_type", "attempt"}


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    @property
    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


@contextmanager
def root_output(log_format: str) -> Iterator[Captured]:
    """Send root's records through a handler built like settings.LOGGING's console handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(import_string(settings.LOGGING["formatters"][log_format]["()"])())
    for name in settings.LOGGING["handlers"]["console"]["filters"]:
        handler.addFilter(import_string(settings.LOGGING["filters"][name]["()"])())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)


@pytest.fixture
def captured() -> Iterator[Captured]:
    with root_output("json") as output:
        yield output


@pytest.fixture
def plain_output() -> Iterator[Captured]:
    with root_output("plain") as output:
        yield output


def test_json_lines_are_one_object_each_with_time_level_logger_and_message(captured):
    logging.getLogger("some.library").warning("disk %s is %d%% full", "/data", 93)

    [entry] = captured.entries
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "some.library"
    assert entry["message"] == "disk /data is 93% full"
    assert entry["time"].endswith("+00:00")
    assert isinstance(entry["process"], int)


def test_json_lines_carry_extra_fields_and_the_traceback_on_one_line(captured):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("jobs").exception("it broke", extra={"queue": "cpu"})

    assert len(captured.lines) == 1
    [entry] = captured.entries
    assert entry["queue"] == "cpu"
    assert "ValueError: boom" in entry["exc_info"]


def test_every_line_inside_a_job_scope_carries_the_job_even_from_libraries(captured, job_factory):
    job = job_factory.build(job_type="echo", attempts=2)

    @job_log_scope
    def handle(*, job: Job) -> None:
        logging.getLogger("some.library").info("inside")

    handle(job=job)
    logging.getLogger("some.library").info("outside")

    inside, outside = captured.entries
    assert inside["job_id"] == str(job.pk)
    assert inside["job_type"] == "echo"
    assert inside["attempt"] == 2
    assert JOB_FIELDS.isdisjoint(outside)


@pytest.mark.django_db
def test_every_record_of_a_job_run_carries_its_id_type_and_attempt(
    captured, job_factory, monkeypatch
):
    job = job_factory(job_type="echo", parameters={"message": "hi", "data": None})
    echo = handlers.get("echo")
    original_run = echo.run

    def run_and_log_like_a_library(params, progress):
        logging.getLogger("urllib3.connectionpool").info("a library logs mid-job")
        return original_run(params, progress)

    monkeypatch.setattr(echo, "run", run_and_log_like_a_library)

    services.job_run(job_id=job.pk, worker="test-worker")

    entries = captured.entries
    messages = [entry["message"] for entry in entries]
    assert "job started" in messages
    assert "a library logs mid-job" in messages
    assert any(message.startswith("job completed") for message in messages)
    for entry in entries:
        assert entry["job_id"] == str(job.pk), entry
        assert entry["job_type"] == "echo", entry
        assert entry["attempt"] == 1, entry


@pytest.mark.django_db
def test_a_duplicate_message_is_logged_with_the_job_id_alone_known(captured, job_factory):
    job = job_factory(status=Job.Status.COMPLETED)

    services.job_run(job_id=job.pk, worker="test-worker")

    [entry] = captured.entries
    assert entry["message"].startswith("job not claimed")
    assert entry["job_id"] == str(job.pk)
    assert entry["job_type"] is None
    assert entry["attempt"] is None


@pytest.mark.django_db
def test_submitting_and_cancelling_through_the_api_log_the_job(captured, auth_client):
    created = auth_client.post("/api/jobs/", {"name": "n", "job_type": "echo", "parameters": {}})
    auth_client.post(f"/api/jobs/{created.data['id']}/cancel/")

    by_message = {entry["message"]: entry for entry in captured.entries}
    for message in ("job created", "job cancelled"):
        assert by_message[message]["job_id"] == created.data["id"]
        assert by_message[message]["job_type"] == "echo"
        assert "attempt" in by_message[message]


def test_plain_lines_end_with_the_job_fields_inside_a_job_scope(plain_output, job_factory):
    job = job_factory.build(job_type="sleep", attempts=1)

    @job_log_scope
    def handle(*, job: Job) -> None:
        logging.getLogger("jobs").info("sleeping")

    handle(job=job)
    logging.getLogger("jobs").info("idle")

    inside, outside = plain_output.lines
    assert inside.endswith(f" INFO jobs sleeping [job_id={job.pk} job_type=sleep attempt=1]")
    assert outside.endswith(" INFO jobs idle")


def test_the_console_handler_uses_the_format_from_log_format():
    assert settings.LOG_FORMAT == "plain"  # the default
    assert settings.LOGGING["handlers"]["console"]["formatter"] == settings.LOG_FORMAT
    assert settings.CELERY_WORKER_HIJACK_ROOT_LOGGER is False


def test_beat_sends_of_the_every_second_tasks_are_dropped_and_its_other_lines_kept(
    plain_output,
):
    beat = logging.getLogger("celery.beat")
    sending = "Scheduler: Sending due task %s (%s)"

    beat.info(sending, "dispatch-due-jobs", "jobs.tasks.dispatch_due_jobs")
    beat.info(sending, "reap-stale-jobs", "jobs.tasks.reap_stale_jobs")
    beat.info(sending, "purge-expired-codes", "users.tasks.purge_expired_codes")
    beat.error("Message Error: %s", "jobs.tasks.dispatch_due_jobs could not be sent")

    kept = [line.split(" celery.beat ")[1] for line in plain_output.lines]
    assert kept == [
        "Scheduler: Sending due task purge-expired-codes (users.tasks.purge_expired_codes)",
        "Message Error: jobs.tasks.dispatch_due_jobs could not be sent",
    ]


@pytest.mark.django_db
def test_a_client_error_is_left_to_the_access_log(api_client, caplog):
    with caplog.at_level(logging.DEBUG):
        assert api_client.get("/api/no-such-thing/").status_code == 404
        assert api_client.get("/api/jobs/").status_code == 401

    assert [record for record in caplog.records if record.name == "django.request"] == []


def test_django_records_reach_the_console_once_even_with_debug_on():
    # Django's default logging leaves handlers on its "django" logger, among them a console
    # one that printed each record a second time, beside root's, while DEBUG was on.
    django_logger = logging.getLogger("django")

    assert django_logger.handlers == []
    assert django_logger.propagate


def test_a_server_error_is_still_logged_with_its_traceback(settings, caplog):
    settings.ROOT_URLCONF = "job_system.tests.broken_urls"

    APIClient(raise_request_exception=False).get("/broken/")

    [record] = [record for record in caplog.records if record.name == "django.request"]
    assert record.levelno == logging.ERROR
    assert record.exc_info[0] is ZeroDivisionError


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback.
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@pytest.mark.integration
@pytest.mark.parametrize("debug", ["false", "true"])
def test_gunicorn_logs_each_client_error_once_and_no_error_while_workers_start(
    django_db_setup, tmp_path, debug
):
    port = localredis.free_port()
    base = f"http://127.0.0.1:{port}"
    # A broker database no worker beats into: readiness answers 503, as while workers start.
    no_workers = urlunsplit(urlsplit(settings.REDIS_URL)._replace(path="/13"))
    web = ManagedProcess(
        "web",
        # As the Procfile runs it.
        [
            sys.executable,
            *("-m", "gunicorn", "job_system.wsgi:application", f"--bind=127.0.0.1:{port}"),
            *("--access-logfile=-", "--no-control-socket"),
        ],
        {**subprocess_env(DEBUG=debug), "CELERY_BROKER_URL": no_workers},
        tmp_path / "web.log",
    ).start()
    try:
        wait_for(lambda: http_status(f"{base}/api/health/live/") == 200, timeout=30)
        statuses = [http_status(base + path) for path in ("/api/nothing/", "/api/jobs/")]
        statuses.append(http_status(f"{base}/api/health/"))
    finally:
        web.stop()

    lines = web.log_path.read_text().splitlines()
    assert statuses == [404, 401, 503]
    assert len([line for line in lines if "/api/nothing/" in line]) == 1, lines
    assert len([line for line in lines if "/api/jobs/" in line]) == 1, lines
    assert [line for line in lines if "ERROR" in line or "Unavailable" in line] == [], lines
