"""What `make run` writes and prints before it starts anything."""

import http.server
import subprocess
import threading

import pytest
from dotenv import dotenv_values

from scripts import localredis, run


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Point the launcher's .env and .env.example at an empty folder."""
    monkeypatch.setattr(run, "ENV_FILE", tmp_path / ".env")
    monkeypatch.setattr(run, "ENV_EXAMPLE_FILE", tmp_path / ".env.example")
    return tmp_path


def test_first_run_writes_development_values_over_the_example(project):
    (project / ".env.example").write_text(
        "# Turn on for development only.\nDEBUG=false\nSECRET_KEY=\nREDIS_URL=redis://x:6379/0\n"
    )

    run.ensure_dotenv()

    values = dotenv_values(project / ".env")
    assert values["DEBUG"] == "true"
    assert len(values["SECRET_KEY"]) >= 50
    assert values["FLOWER_BASIC_AUTH"].startswith("flower:")
    assert values["REDIS_URL"] == "redis://x:6379/0"  # The rest of the example is kept.
    assert "# Turn on for development only." in (project / ".env").read_text()
    assert (project / ".env").stat().st_mode & 0o077 == 0  # It holds secrets.


def test_first_run_without_an_example_writes_a_minimal_env(project):
    run.ensure_dotenv()

    assert set(dotenv_values(project / ".env")) == {"DEBUG", "SECRET_KEY", "FLOWER_BASIC_AUTH"}


def test_each_new_env_gets_its_own_secrets(project):
    run.ensure_dotenv()
    first = dotenv_values(project / ".env")
    (project / ".env").unlink()
    run.ensure_dotenv()

    second = dotenv_values(project / ".env")
    assert first["SECRET_KEY"] != second["SECRET_KEY"]
    assert first["FLOWER_BASIC_AUTH"] != second["FLOWER_BASIC_AUTH"]


def test_an_existing_env_is_never_touched(project):
    (project / ".env").write_text("DEBUG=false\n")

    run.ensure_dotenv()

    assert (project / ".env").read_text() == "DEBUG=false\n"


def test_set_dotenv_value_replaces_every_assignment_but_not_comments():
    text = "# SECRET_KEY=example\nexport SECRET_KEY=old\nSECRET_KEY = older\nOTHER=1"

    assert run.set_dotenv_value(text, "SECRET_KEY", "new") == (
        "# SECRET_KEY=example\nSECRET_KEY=new\nSECRET_KEY=new\nOTHER=1"
    )


def test_set_dotenv_value_appends_a_missing_key_on_its_own_line():
    assert run.set_dotenv_value("OTHER=1", "DEBUG", "true") == "OTHER=1\nDEBUG=true\n"


def test_printed_urls_hide_passwords():
    assert run.redact("postgres://app:s3cret@db:5432/jobs") == "postgres://app:***@db:5432/jobs"
    assert run.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_ready_waits_for_every_job_worker_in_the_procfile():
    procfile = (run.BASE_DIR / "Procfile").read_text()
    job_workers = {
        line.split(":", 1)[0]
        for line in procfile.splitlines()
        if " worker " in line
        # Beat's worker and the webhooks' run no jobs.
        and "--queues=housekeeping" not in line
        and "--queues=webhooks" not in line
    }

    assert set(run.JOB_WORKERS) == job_workers
    assert run.workers_in('{"status": "ok", "workers": 2}') == 2
    assert run.workers_in("not json") == 0


class _Answers(http.server.BaseHTTPRequestHandler):
    """Health says ok with both job workers; /api/events/ answers as the events process does."""

    def do_GET(self) -> None:
        if self.path == "/api/health/":
            status, body = 200, b'{"status": "ok", "workers": 2}'
        else:
            status, body = 401, b'{"code": "not_authenticated"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answering_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def honcho_stand_in():
    process = subprocess.Popen(["sleep", "30"])  # noqa: S607 - a process that runs.
    yield process
    process.kill()
    process.wait()


def test_ready_once_health_is_ok_and_the_events_process_answers(answering_server, honcho_stand_in):
    ready, _ = run.wait_until_healthy(
        f"{answering_server}/api/health/", f"{answering_server}/api/events/", honcho_stand_in, []
    )

    assert ready


def test_not_ready_while_the_events_process_does_not_answer(
    answering_server, honcho_stand_in, monkeypatch
):
    monkeypatch.setattr(run, "READY_TIMEOUT_SECONDS", 1.5)
    nobody = f"http://127.0.0.1:{localredis.free_port()}/api/events/"

    ready, last_answer = run.wait_until_healthy(
        f"{answering_server}/api/health/", nobody, honcho_stand_in, []
    )

    assert not ready
    assert "the events process" in last_answer


def test_the_ready_message_names_the_events_process_and_its_address(capsys):
    env = {"PORT": "8000", "EVENTS_PORT": "8001", "EVENTS_BIND": "0.0.0.0"}  # noqa: S104

    run.print_ready(env, "redis://127.0.0.1:6379/0", "{}")

    printed = capsys.readouterr().out
    assert "Ready: web, events, worker and worker-long" in printed
    assert "http://127.0.0.1:8001/api/events/" in printed
