import os
import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

from job_system.celery import app as celery_app

ROOT = settings.BASE_DIR


def documented_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_every_variable_the_settings_read_is_documented_in_env_example():
    settings_source = (ROOT / "job_system" / "settings.py").read_text()
    procfile = (ROOT / "Procfile").read_text()
    read = set(re.findall(r'env_\w+\("([A-Z0-9_]+)"', settings_source))
    read |= set(re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', settings_source))
    read |= set(re.findall(r"\$\{([A-Z0-9_]+)", procfile))

    assert read
    assert read - documented_variables() == set()


def start_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "job_system.settings",
            "ENV_FILE": os.devnull,
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    started = start_settings(DEBUG="false")

    assert started.returncode != 0
    assert "SECRET_KEY is required" in started.stderr


@pytest.mark.parametrize("weak", ["short", "django-insecure-" + "x" * 40])
def test_production_refuses_a_weak_secret_key(weak):
    started = start_settings(DEBUG="false", SECRET_KEY=weak)

    assert started.returncode != 0
    assert "SECRET_KEY must be a long random value" in started.stderr


def test_a_bad_boolean_is_refused_by_name():
    started = start_settings(DEBUG="maybe")

    assert started.returncode != 0
    assert "DEBUG must be true or false" in started.stderr


@pytest.mark.parametrize("failures", ["0", "101"])
def test_a_login_lock_beyond_nists_100_failures_is_refused(failures):
    started = start_settings(DEBUG="true", LOGIN_MAX_FAILURES=failures)

    assert started.returncode != 0
    assert "LOGIN_MAX_FAILURES must be from 1 to 100" in started.stderr


@pytest.mark.parametrize("interval", ["-0.01", "1.5"])
def test_a_publish_interval_outside_zero_to_a_second_is_refused(interval):
    started = start_settings(DEBUG="true", JOB_PUBLISH_INTERVAL_SECONDS=interval)

    assert started.returncode != 0
    assert "JOB_PUBLISH_INTERVAL_SECONDS must be between 0 and 1" in started.stderr


def readme_production_variables() -> dict[str, str]:
    """Read README's production block, with each `<placeholder>` filled with a random value."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^For production:\n\n```sh\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)
    assert block, "README.md has no production block"
    variables = {}
    for line in block[1].splitlines():
        assignment = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*?)\s*(#.*)?", line)
        assert assignment, f"not a variable: {line!r}"
        name, value = assignment[1], assignment[2]
        variables[name] = re.sub(r"<[^>]*>", lambda _: secrets.token_urlsafe(40), value)
    return variables


def test_readmes_production_block_passes_the_deploy_check_as_printed():
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        # Nothing but the block: no DEBUG, SECRET_KEY or .env of the test run's.
        env={"PATH": os.environ["PATH"], "ENV_FILE": os.devnull, **readme_production_variables()},
        capture_output=True,
        text=True,
        check=False,
    )

    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("depth", ["7", "257"])
def test_a_json_depth_limit_outside_8_to_256_is_refused(depth):
    started = start_settings(DEBUG="true", MAX_JSON_DEPTH=depth)

    assert started.returncode != 0
    assert "MAX_JSON_DEPTH must be from 8 to 256" in started.stderr


def test_development_starts_without_a_secret_key():
    assert start_settings(DEBUG="true").returncode == 0


def test_celery_settings_keep_jobs_safe_when_workers_or_connections_die():
    conf = celery_app.conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert conf.task_serializer == "json"
    # Redis must not redeliver a running job's message while its lease can still be renewed.
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert visibility > settings.JOB_LEASE.total_seconds() * 10


def test_sqlite_is_tuned_for_concurrent_writers():
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        pytest.skip("SQLite only")
    options = settings.DATABASES["default"]["OPTIONS"]

    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] >= 5
    assert "journal_mode=WAL" in options["init_command"]


def test_beat_dispatches_every_second_and_reaps():
    schedule = settings.CELERY_BEAT_SCHEDULE

    assert schedule["dispatch-due-jobs"]["schedule"] <= 1
    assert schedule["reap-stale-jobs"]["task"] == "jobs.tasks.reap_stale_jobs"
    assert {"users.tasks.purge_expired_codes", "users.tasks.flush_expired_tokens"} <= {
        entry["task"] for entry in schedule.values()
    }
