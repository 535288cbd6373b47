"""The web process's Publisher: requests hand it their messages, and its thread publishes them."""

import os
import subprocess
import sys
import time
import uuid

import pytest
from celery import Celery

from jobs import queue
from jobs.models import Job
from jobs.tests.live import broker_redis, subprocess_env, take_queue


@pytest.fixture(autouse=True)
def _empty_default_queue():
    """Start without the messages earlier tests published and no worker took."""
    take_queue("default")


def queued(name: str) -> int:
    """How many messages wait in a broker queue, without publishing what the publisher holds."""
    return broker_redis().llen(name)


def run_job_ids(messages: list[tuple[dict, list]]) -> list[list[str]]:
    """The job ids of each message, in the order they were published."""
    return [[args[0]] if h["task"] == queue.RUN_JOB_TASK else args[0] for h, args in messages]


def test_it_publishes_at_once_when_idle_and_gathers_what_comes_in_the_interval(
    job_factory, settings
):
    settings.JOB_PUBLISH_INTERVAL_SECONDS = 0.5
    first, second, third = [job_factory(job_type="echo") for _ in range(3)]
    publisher = queue.Publisher()

    publisher.hand_over([queue.message_for(first)])
    assert publisher.flush(timeout=5)
    assert run_job_ids(take_queue("default")) == [[str(first.pk)]]

    publisher.hand_over([queue.message_for(second)])
    publisher.hand_over([queue.message_for(third)])
    assert queued("default") == 0  # held for the rest of the interval
    started = time.monotonic()
    assert publisher.flush(timeout=5)

    assert run_job_ids(take_queue("default")) == [[str(second.pk), str(third.pk)]]
    assert time.monotonic() - started > 0.3


def test_requests_hand_their_jobs_over_and_an_interval_of_zero_publishes_in_the_request(
    api_client, verified_user, settings, django_capture_on_commit_callbacks
):
    def submit(name: str) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = api_client.post("/api/jobs/", {"name": name, "job_type": "echo"})
        return response.data["id"]

    api_client.force_authenticate(verified_user)
    settings.JOB_PUBLISH_INTERVAL_SECONDS = 1
    submit("warm-up")
    queue.publisher.flush(timeout=5)
    take_queue("default")  # The thread now waits out its interval.
    gathered = [submit("a"), submit("b")]
    assert queued("default") == 0
    assert queue.publisher.flush(timeout=5)
    assert run_job_ids(take_queue("default")) == [gathered]

    settings.JOB_PUBLISH_INTERVAL_SECONDS = 0
    at_once = submit("c")
    assert run_job_ids(take_queue("default")) == [[at_once]]


@pytest.mark.django_db(transaction=True)
def test_a_failed_publish_hands_the_jobs_back_to_the_dispatcher(job_factory):
    jobs = [job_factory(job_type="echo") for _ in range(2)]
    redis_down = Celery("outage", broker="redis://127.0.0.1:1/0", set_as_current=False)
    redis_down.conf.broker_connection_max_retries = 1
    publisher = queue.Publisher(app=redis_down)

    publisher.hand_over([queue.message_for(job) for job in jobs])

    assert publisher.flush(timeout=30)
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], enqueued_at=None).count() == 2


def test_a_forked_child_starts_empty_and_the_parent_keeps_what_it_held(job_factory, settings):
    settings.JOB_PUBLISH_INTERVAL_SECONDS = 0.5
    first, held = job_factory(job_type="echo"), job_factory(job_type="echo")
    queue.publisher.hand_over([queue.message_for(first)])
    queue.publisher.flush(timeout=5)
    queue.publisher.hand_over([queue.message_for(held)])  # waits for the interval

    pid = os.fork()
    if pid == 0:  # The child: nothing inherited to publish, and a thread of its own.
        fresh = queue.publisher._pending == [] and queue.publisher._thread is None
        os._exit(0 if fresh else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.publisher.flush(timeout=5)
    assert run_job_ids(take_queue("default")) == [[str(first.pk)], [str(held.pk)]]


# Hands one message over and waits for it, so that the thread then waits out its interval,
# hands the rest over and exits at once.
EXIT_RIGHT_AFTER_HANDING_OVER = """
import uuid
from jobs import queue
messages = [queue.JobMessage(uuid.UUID(job_id), "echo", 10) for job_id in {job_ids!r}]
queue.publisher.hand_over(messages[:1])
queue.publisher.flush()
queue.publisher.hand_over(messages[1:])
"""


def test_a_process_that_exits_publishes_what_its_publisher_still_held():
    job_ids = [str(uuid.uuid4()) for _ in range(3)]
    code = EXIT_RIGHT_AFTER_HANDING_OVER.format(job_ids=job_ids)

    exited = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "manage.py", "shell", "-c", code],
        env=subprocess_env(JOB_PUBLISH_INTERVAL_SECONDS="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert exited.returncode == 0, exited.stderr
    assert run_job_ids(take_queue("default")) == [job_ids[:1], job_ids[1:]]
