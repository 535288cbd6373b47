"""What `make run` writes and prints before it starts anything."""

import pytest
from dotenv import dotenv_values

from scripts import run


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
        if " worker " in line and "--queues=housekeeping" not in line
    }

    assert set(run.JOB_WORKERS) == job_workers
    assert run.workers_in('{"status": "ok", "workers": 2}') == 2
    assert run.workers_in("not json") == 0
