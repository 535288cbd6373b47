"""The reaper's audit of the broker: admitted jobs whose message is nowhere are published again.

A web process killed while its publisher held a message, a Redis that restarted empty, a worker
killed or frozen with messages it took: the job stays admitted with no message. The reaper
publishes it again once JOB_MESSAGE_GRACE has passed, but never a job whose message still
waits in its queue or is held by a worker that shows signs of life.
"""

import json
import time
from datetime import timedelta

import pytest
import time_machine
from django.test import TestCase
from django.utils import timezone

from jobs import queue, services
from jobs.models import Job
from jobs.tests.live import broker_redis, take_queue

pytestmark = pytest.mark.django_db

AFTER_GRACE = timedelta(seconds=6)  # JOB_MESSAGE_GRACE_SECONDS is 5


def republished() -> int:
    """Run the reaper; its messages go out as they would once its transaction commits."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.jobs_reap_stale()["republished"]


def messages_for(job: Job) -> int:
    return sum(1 for _headers, args in take_queue(job.queue) if str(job.pk) in json.dumps(args))


def take_like_a_worker(job: Job, *, taken_at: float) -> None:
    """Move the job's message from its queue to the unacknowledged, as kombu does on delivery."""
    broker = broker_redis()
    raw = broker.rpop(job.queue)
    assert raw is not None
    message = json.loads(raw)
    tag = message["properties"]["delivery_tag"]
    broker.hset(queue.UNACKED_KEY, tag, json.dumps([message, "", job.queue]))
    broker.zadd(queue.UNACKED_INDEX_KEY, {tag: taken_at})


@pytest.fixture(autouse=True)
def _empty_broker():
    yield
    broker_redis().delete(queue.UNACKED_KEY, queue.UNACKED_INDEX_KEY, "default", "long", "cpu")


def test_an_admitted_job_whose_message_never_reached_the_broker_is_published_again(job_factory):
    job = job_factory(enqueued_at=timezone.now())  # Admitted; its publisher died with it.

    assert republished() == 0  # Its publish may still be on its way.
    with time_machine.travel(timezone.now() + AFTER_GRACE):
        assert republished() == 1
    assert messages_for(job) == 1


def test_a_message_waiting_in_its_queue_is_not_published_again(job_factory):
    job = job_factory(enqueued_at=timezone.now())
    queue.publish([queue.message_for(job)])

    with time_machine.travel(timezone.now() + AFTER_GRACE):
        assert republished() == 0
    assert messages_for(job) == 1


def test_a_message_a_worker_just_took_is_left_to_it(job_factory):
    job = job_factory(enqueued_at=timezone.now())
    queue.publish([queue.message_for(job)])

    with time_machine.travel(timezone.now() + AFTER_GRACE):
        take_like_a_worker(job, taken_at=time.time())
        assert republished() == 0


def test_a_message_taken_long_ago_by_a_worker_running_none_of_its_jobs_is_published_again(
    job_factory,
):
    running = job_factory(enqueued_at=timezone.now())
    behind = job_factory(enqueued_at=timezone.now())
    queue.publish([queue.message_for(running), queue.message_for(behind)])  # One shared message.
    take_like_a_worker(running, taken_at=time.time())
    Job.objects.filter(pk=running.pk).update(
        status=Job.Status.IN_PROGRESS,
        claim_token=running.pk,
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )

    with time_machine.travel(timezone.now() + AFTER_GRACE):
        # Its worker runs the first job: the second waits its turn in the same message.
        assert republished() == 0
        # The worker was frozen or killed: the reaper took the first job back.
        Job.objects.filter(pk=running.pk).update(
            status=Job.Status.PENDING, claim_token=None, lease_expires_at=None, enqueued_at=None
        )
        assert republished() == 1
    behind.refresh_from_db()
    assert behind.enqueued_at > timezone.now() - timedelta(seconds=1)


def test_a_message_with_an_eta_held_by_a_worker_is_live_until_its_time(job_factory):
    job = job_factory()
    # Admitted now, once the factory has hashed its owner's password (seconds on a loaded
    # machine), so that the message is still ahead of its time when published.
    admitted = timezone.now()
    later = admitted + timedelta(seconds=2)
    job.enqueued_at, job.run_after = admitted, later
    job.save(update_fields=["enqueued_at", "run_after"])
    queue.publish([queue.message_for(job)])
    take_like_a_worker(job, taken_at=admitted.timestamp())

    # Times from the admission, not from whenever a busy machine gets here.
    with time_machine.travel(admitted + AFTER_GRACE):
        assert republished() == 0  # Its ETA plus the grace has not passed.
    with time_machine.travel(later + 2 * AFTER_GRACE):
        assert republished() == 1


def test_every_admitted_job_is_published_again_after_the_broker_lost_its_data(job_factory):
    jobs = job_factory.create_batch(3, enqueued_at=timezone.now())
    queue.publish([queue.message_for(job) for job in jobs])
    broker_redis().flushdb()

    with time_machine.travel(timezone.now() + AFTER_GRACE):
        assert republished() == 3
        assert republished() == 0
