"""A worker whose acknowledgement fails as Redis goes away consumes again once it is back.

kombu logs a connection error raised by an acknowledgement and carries on, but the Redis
transport may have stopped polling the broker by then, counting on that error to reach the
consumer and make it reconnect: in make chaos, the housekeeping worker acknowledged a task as
Redis restarted and then sat idle for good, Beat's tasks piling up in its queue. The service's
app raises that error (job_system.celery). Which of the worker's connections the transport
stops watching depends on its connection pool, so the worker test below does not always
reach that state without the fix; the first test shows that the error is raised.
"""

import logging
import os
import sys
import uuid

import kombu
import pytest
from celery import Celery

import job_system.celery  # noqa: F401 - the service's acknowledgement, as its workers have it.
from jobs.tests.live import wait_for
from scripts import localredis
from scripts.stack import ManagedProcess

pytestmark = pytest.mark.integration


def send(url: str, name: str, *args: str) -> None:
    producer = Celery(broker=url)
    try:
        producer.send_task(name, args=args, queue="tests")
    finally:
        producer.close()


def test_a_connection_error_acknowledging_a_message_is_raised_to_the_consumer(tmp_path):
    broker, url = localredis.start_redis(None, tmp_path / "redis")
    try:
        with kombu.Connection(url) as connection:
            queue = kombu.Queue("acked")
            connection.Producer().publish({"a": 1}, routing_key="acked", declare=[queue])
            message = queue(connection.default_channel).get(no_ack=False)
            localredis.stop_redis(broker)

            with pytest.raises(connection.connection_errors):
                message.ack_log_error(logging.getLogger(__name__), connection.connection_errors)
    finally:
        localredis.stop_redis(broker)


def test_a_worker_whose_ack_failed_with_the_broker_consumes_again(tmp_path):
    port = localredis.free_port()
    broker, url = localredis.start_redis(port, tmp_path / "redis")
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": url,
        "CELERY_BROKER_URL": url,
        "PYTHONUNBUFFERED": "1",
    }
    hostname = f"broker-loss-{uuid.uuid4().hex[:8]}"
    worker = ManagedProcess(
        name="worker",
        argv=[sys.executable, "-m", "celery", "-A", "job_system.tests.broker_loss_app",
              "worker", "--pool=solo", "--queues=tests", f"--hostname={hostname}@%h",
              "--loglevel=INFO", "--without-mingle", "--without-gossip",
              # As the Procfile's housekeeping worker: no remote control, so its only
              # connection to the broker is the one it takes messages from.
              "worker_enable_remote_control=false", "worker_send_task_events=false"],
        env=env,
        log_path=tmp_path / "worker.log",
    ).start()  # fmt: skip
    try:
        wait_for(
            lambda: "ready." in worker.log_path.read_text(),
            timeout=60,
            message=f"the worker did not start\n{worker.log_tail()}",
        )

        send(url, "tests.stop_broker", url)
        broker.wait(timeout=30)
        # Down a moment, as Redis restarting: the worker's acknowledgement fails meanwhile.
        wait_for(lambda: "Couldn't ack" in worker.log_path.read_text(), timeout=30)
        broker, _ = localredis.start_redis(port, tmp_path / "redis")
        marker = tmp_path / "ran"
        send(url, "tests.touch", str(marker))

        wait_for(
            marker.exists,
            timeout=30,
            message=f"the worker consumed nothing more\n{worker.log_tail()}",
        )
    finally:
        worker.stop()
        localredis.stop_redis(broker)
