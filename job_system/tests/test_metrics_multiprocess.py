"""Metrics written by several processes into PROMETHEUS_MULTIPROC_DIR, added up by /metrics."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from job_system.tests.scrape import METRICS_TOKEN, scrape, value
from jobs.tests.live import subprocess_env
from scripts import run
from scripts.metricsdir import empty_metrics_dir

pytestmark = pytest.mark.django_db

# What a web process does when a job is submitted, without the database.
COUNT_ONE_SUBMISSION = """
import django
django.setup()
from types import SimpleNamespace
from jobs import metrics
metrics.job_created(SimpleNamespace(job_type="word_count"))
"""


def start_process_counting_a_submission(folder: Path) -> subprocess.Popen:
    env = subprocess_env(
        PROMETHEUS_MULTIPROC_DIR=str(folder), DJANGO_SETTINGS_MODULE="job_system.settings"
    )
    return subprocess.Popen(  # noqa: S603 - our interpreter and a fixed script
        [sys.executable, "-c", COUNT_ONE_SUBMISSION], cwd=settings.BASE_DIR, env=env
    )


def test_metrics_add_up_what_every_process_on_the_host_wrote(client, settings, tmp_path):
    folder = tmp_path / "prometheus"
    processes = [start_process_counting_a_submission(folder) for _ in range(2)]
    assert [process.wait(timeout=60) for process in processes] == [0, 0]
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.PROMETHEUS_MULTIPROC_DIR = str(folder)

    samples = scrape(client)

    assert value(samples, "jobs_created_total", job_type="word_count") == 2
    assert len(list(folder.glob("counter_*.db"))) == 2  # one file per process
    assert value(samples, "jobs_pending", job_type="word_count") == 0  # the database's gauge


def test_a_new_run_starts_from_an_empty_metrics_folder_and_keeps_other_files(tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "notes.txt").write_text("not ours")

    empty_metrics_dir(folder)
    empty_metrics_dir(tmp_path / "new" / "folder")

    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]
    assert (tmp_path / "new" / "folder").is_dir()


def test_make_run_gives_its_processes_a_metrics_folder_unless_one_is_set(monkeypatch, tmp_path):
    monkeypatch.setattr(run, "ENV_FILE", Path(os.devnull))
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "flower:x")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert run.load_environment()["PROMETHEUS_MULTIPROC_DIR"] == str(run.RUN_DIR / "prometheus")

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert run.load_environment()["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
