"""The service's Celery app with two tasks of its own, for test_broker_loss's worker.

Importing job_system.celery gives the worker the service's settings and its fix for a failed
acknowledgement; the tasks let the test take the broker away while a task runs.
"""

from pathlib import Path

import redis

from job_system.celery import app

__all__ = ["app"]


@app.task(name="tests.stop_broker")
def stop_broker(url: str) -> None:
    """Shut the broker down, saving nothing, as the task ends: its acknowledgement fails."""
    redis.Redis.from_url(url).shutdown(nosave=True)


@app.task(name="tests.touch")
def touch(path: str) -> None:
    Path(path).touch()
