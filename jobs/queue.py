"""Publishing job ids to the broker.

A message only says "job X may be due"; the worker's claim decides. So a publish that fails is
not fatal: the job goes back to Beat's dispatcher, and a duplicate message is a no-op.

A job due within the look-ahead is published ahead with an ETA, and the worker holds the message
until then. Only within the look-ahead: an ETA message lives in a worker's memory, and on
Redis a long one is delivered again and again, so future jobs wait in the database.

Requests do not publish themselves: they hand their messages to their process's Publisher,
whose thread sends what several requests handed it together.
"""

import atexit
import base64
import json
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple

from celery import Celery
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from job_system.celery import app as celery_app
from job_system.heartbeats import heartbeat_redis
from jobs import handlers
from jobs.models import Job

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "jobs.tasks.run_job"
RUN_JOBS_TASK = "jobs.tasks.run_jobs"
MESSAGE_FIELDS = ("pk", "job_type", "timeout_seconds", "run_after")


class JobMessage(NamedTuple):
    job_id: uuid.UUID
    job_type: str
    timeout_seconds: int
    run_after: datetime | None = None


def message_for(job: Job) -> JobMessage:
    return JobMessage(job.pk, job.job_type, job.timeout_seconds, job.run_after)


def publish_horizon(now: datetime) -> datetime:
    """The latest run_after of a job that may be published at `now`."""
    return now + timedelta(seconds=settings.JOB_DISPATCH_LOOKAHEAD_SECONDS)


def queue_for(job_type: str) -> str:
    # A job of a type this release no longer has still gets a message; the worker fails it.
    handler = handlers.find(job_type)
    return handler.queue if handler else celery_app.conf.task_default_queue


def publish_on_commit(messages: list[JobMessage], *, from_request: bool = False) -> None:
    """Publish once the surrounding transaction commits."""
    after_commit(messages=messages, from_request=from_request)


def after_commit(
    *, messages: list[JobMessage] = (), admit: list[str] = (), from_request: bool = False
) -> None:
    """Once the surrounding transaction commits, publish `messages`, then admit to `admit`.

    A request's work goes to this process's Publisher (unless JOB_PUBLISH_INTERVAL_SECONDS is
    0), so that the request does not wait for it. Celery's processes do it at once: billiard
    ends its children with os._exit, which would drop whatever a Publisher still held.
    """
    if not messages and not admit:
        return
    if from_request and settings.JOB_PUBLISH_INTERVAL_SECONDS > 0:
        transaction.on_commit(partial(publisher.hand_over, list(messages), admit))
    else:
        transaction.on_commit(partial(_publish_and_admit, list(messages), admit))


def _publish_and_admit(messages: list[JobMessage], admit: Iterable[str]) -> None:
    if messages:
        publish(messages)
    if admit:
        # Imported here: admission publishes through this module.
        from jobs.services.admission import jobs_admit

        try:
            jobs_admit(queues=sorted(admit))
        except Exception:
            # The jobs are committed and wait; Beat's dispatcher admits them within a second.
            logger.exception("admission after a submission failed; the dispatcher will retry")


def publish(messages: list[JobMessage], *, app: Celery = celery_app) -> None:
    """Send the jobs' messages; on failure, leave the jobs to the dispatcher.

    A job gets a run_job message of its own, except quick jobs due at the same moment (now, or
    one ETA), which share run_jobs messages by queue (JobHandler.quick, JOB_MESSAGE_BATCH_SIZE).
    """
    hard_grace = settings.JOB_HARD_TIMEOUT_GRACE.total_seconds()
    now = timezone.now()
    try:
        # kombu's batch buffers the messages in one Redis pipeline, sent when the block ends:
        # one round trip for a bulk request or a dispatcher tick, not one per job.
        with app.producer_or_acquire() as producer, producer.batch():
            for group in _message_groups(messages, now=now):
                first = group[0]
                if len(group) == 1:
                    app.send_task(
                        RUN_JOB_TASK,
                        args=[str(first.job_id)],
                        queue=queue_for(first.job_type),
                        eta=_eta(first, now=now),
                        # The worker's watchdog interrupts the handler at the job's limit;
                        # Celery kills the process if it still runs a grace period later. No
                        # Celery soft limit: its signal would come about when the watchdog's
                        # does, and a second one could cut the attempt's record short.
                        time_limit=first.timeout_seconds + hard_grace,
                        producer=producer,
                    )
                else:
                    app.send_task(
                        RUN_JOBS_TASK,
                        args=[[str(message.job_id) for message in group]],
                        queue=queue_for(first.job_type),
                        eta=_eta(first, now=now),  # The same for every job of the message.
                        # The worker's watchdog gives each job its time limit; Celery's hard
                        # limit covers them all, one after another.
                        time_limit=sum(m.timeout_seconds + hard_grace for m in group),
                        producer=producer,
                    )
    except Exception:
        # The rows are committed, so the client must not see an error. Release the jobs to the
        # dispatcher, which publishes them again within a second once the broker is back.
        logger.exception("publishing %d job(s) failed; the dispatcher will retry", len(messages))
        release([message.job_id for message in messages])


class Publisher:
    """A thread that publishes what the process's requests hand it, several at a time.

    One message per submitted job cost its request Celery's message building and a Redis round
    trip, and cost the worker's main process about as much again to receive and hand on; so
    single submissions ran at 0.14-0.18x raw Celery's rate, where bulk ones, which share
    messages, ran at 0.64x. The thread publishes at once when it has been idle, then at most
    once per JOB_PUBLISH_INTERVAL_SECONDS: under load, the jobs submitted in between share
    messages (publish()), and a job waits at most that long for its message.

    What it holds when the process is killed is lost, like messages lost with Redis: those jobs
    stay pending with enqueued_at set, and the reaper publishes them again after
    JOB_REDISPATCH_AFTER. A process that exits normally publishes them first.
    """

    def __init__(self, *, app: Celery = celery_app) -> None:
        self.app = app
        self.reset()

    def reset(self) -> None:
        """Start afresh: no thread, nothing held. A forked child must, as it has neither."""
        self._condition = threading.Condition()
        self._pending: list[JobMessage] = []
        self._admit: set[str] = set()
        self._sending = False
        self._thread: threading.Thread | None = None

    def hand_over(self, messages: list[JobMessage], admit: Iterable[str] = ()) -> None:
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="job-publisher", daemon=True)
                self._thread.start()
                atexit.register(self.flush, timeout=10)
            self._pending.extend(messages)
            self._admit.update(admit)
            self._condition.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over so far is published; False on timeout."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._pending and not self._admit and not self._sending, timeout
            )

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._admit)
                messages, self._pending, self._sending = self._pending, [], True
                admit, self._admit = self._admit, set()
            if messages:
                publish(messages, app=self.app)  # Never raises: a failure releases the jobs.
            _publish_and_admit([], admit)  # Never raises either.
            try:
                # This thread must not keep its database connection open for ever.
                connection.close()
            except Exception:
                logger.exception("the publisher could not close its database connection")
            with self._condition:
                self._sending = False
                self._condition.notify_all()
            time.sleep(settings.JOB_PUBLISH_INTERVAL_SECONDS)


publisher = Publisher()
# gunicorn forks its workers; each must start its own thread, and must not publish again
# what the parent held (the parent does).
os.register_at_fork(after_in_child=publisher.reset)


def _message_groups(messages: list[JobMessage], *, now: datetime) -> Iterator[list[JobMessage]]:
    """The jobs of each message: quick jobs due at one moment together by queue, the rest alone."""
    # Quick jobs scheduled for one instant (a minute's schedules) share an ETA message as due
    # ones share theirs: a message each made the worker's per-message cost the bulk of their
    # work, and the last of them started late.
    quick: defaultdict[tuple[str, datetime | None], list[JobMessage]] = defaultdict(list)
    for message in messages:
        handler = handlers.find(message.job_type)
        if handler and handler.quick:
            quick[(handler.queue, _eta(message, now=now))].append(message)
        else:
            yield [message]
    size = settings.JOB_MESSAGE_BATCH_SIZE
    for group in quick.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


def _eta(message: JobMessage, *, now: datetime) -> datetime | None:
    """When the worker should run the message: None for now, else at most the look-ahead away."""
    if message.run_after is None or message.run_after <= now:
        return None
    # Callers publish only jobs within the look-ahead; should one slip through, it arrives early,
    # which the claim refuses and releases to the dispatcher, rather than sitting in a worker.
    return min(message.run_after, publish_horizon(now))


def release(job_ids: list[uuid.UUID]) -> None:
    """Release pending jobs to the dispatcher, which publishes them again within a second."""
    # Imported here: the services import this module.
    from jobs.services import transitions

    try:
        transitions.apply_all(transitions.RELEASE, Job.objects.filter(pk__in=job_ids))
    except Exception:
        # Even if this write fails the reaper republishes them after JOB_REDISPATCH_AFTER.
        logger.exception("could not release %d job(s) to the dispatcher", len(job_ids))


# Where kombu's Redis transport keeps the messages that workers took and have not yet
# acknowledged (with late acks: until the task ends), and when each was taken.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
# The most messages read from one queue: a queue holds a short window of them (admission).
QUEUE_READ_LIMIT = 10_000


@dataclass(frozen=True)
class BrokerMessage:
    """A job message as it is in the broker now: waiting in a queue, or taken by a worker."""

    job_ids: tuple[uuid.UUID, ...]
    # Unix time a worker took it; None while it waits in its queue.
    taken_at: float | None
    eta: datetime | None


def broker_messages(queue_names: Iterable[str]) -> list[BrokerMessage]:
    """Every job message in the broker: in the queues, and taken but not acknowledged.

    One pipelined round trip. Raises redis.RedisError when the broker cannot be read.
    """
    names = list(queue_names)
    pipe = heartbeat_redis().pipeline(transaction=False)
    for name in names:
        pipe.lrange(name, 0, QUEUE_READ_LIMIT - 1)
    pipe.hgetall(UNACKED_KEY)
    pipe.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
    *waiting, taken, taken_at = pipe.execute()
    messages = [_job_message(raw, None) for raws in waiting for raw in raws]
    times = dict(taken_at)
    for tag, entry in taken.items():
        raw, _exchange, _routing_key = json.loads(entry)
        messages.append(_job_message(raw, times.get(tag, 0.0)))
    return [message for message in messages if message is not None]


def _job_message(raw: bytes | str | dict, taken_at: float | None) -> BrokerMessage | None:
    """Decode a Celery message as kombu stores it; None if it is not a job's or unreadable."""
    try:
        message = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        headers = message["headers"]
        if headers.get("task") not in (RUN_JOB_TASK, RUN_JOBS_TASK):
            return None
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids = args[0] if headers["task"] == RUN_JOBS_TASK else args[:1]
        eta = datetime.fromisoformat(headers["eta"]) if headers.get("eta") else None
        return BrokerMessage(tuple(uuid.UUID(job_id) for job_id in ids), taken_at, eta)
    except (KeyError, IndexError, TypeError, ValueError):
        logger.warning("unreadable message in the broker, ignored")
        return None
