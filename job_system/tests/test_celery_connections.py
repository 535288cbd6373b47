"""Workers keep their database connection between tasks, as web threads do between requests."""

import pytest
from celery.signals import task_postrun, task_prerun
from django.db import connection

from jobs.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True)


def run_task_cycle() -> None:
    """Send the signals a worker sends around a task, as a worker (not eager) would."""
    run_job.push_request(is_eager=False)
    try:
        task_prerun.send(sender=run_job, task_id="t", task=run_job, args=(), kwargs={})
        task_postrun.send(sender=run_job, task_id="t", task=run_job, args=(), kwargs={})
    finally:
        run_job.pop_request()


def test_a_connection_is_reused_across_tasks(settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    connection.close()
    connection.ensure_connection()
    connection.close_at = None  # set from CONN_MAX_AGE when a connection opens
    opened = connection.connection

    run_task_cycle()

    assert connection.connection is opened


def test_a_connection_past_its_age_is_closed_after_a_task():
    connection.ensure_connection()
    connection.close_at = 0  # long past

    run_task_cycle()

    assert connection.connection is None


def test_a_connection_that_saw_an_error_and_is_unusable_is_closed(monkeypatch):
    connection.ensure_connection()
    connection.errors_occurred = True
    monkeypatch.setattr(connection, "is_usable", lambda: False)

    run_task_cycle()

    assert connection.connection is None
