"""Worker heartbeats in Redis, so that readiness knows which workers live without asking them.

Asking (Celery's broadcast `ping`) held the asking web thread for the whole reply timeout,
about a second per health check. Instead, each worker's main process writes a key that
expires after HEARTBEAT_TTL_SECONDS, every HEARTBEAT_SECONDS, and lists it in one set;
readiness counts the listed keys that still exist, in one round trip.

The beat runs on the worker's event loop (a consumer bootstep's repeating timer), not in a
thread of its own: a worker whose loop is stuck stops beating and drops out within the TTL,
as a dead one does. A worker that stops normally removes its key at once. The keys live in
the broker's Redis, the one the workers must reach to get work. Only workers that run jobs
beat: the Procfile's `housekeeping`, which serves Beat's queue alone, runs none.
"""

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

import redis
from celery import Celery, bootsteps
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# Three beats: a worker is counted until it has missed about three in a row.
HEARTBEAT_TTL_SECONDS = 6
# A beat or a count waits at most this long for Redis, once: the beat runs on the worker's
# event loop, and the count in a web request.
REDIS_TIMEOUT_SECONDS = 0.5

HEARTBEAT_KEY_PREFIX = "jobsys:worker-heartbeat:"
HEARTBEAT_SET_KEY = "jobsys:worker-heartbeats"

# Count the listed heartbeats that have not expired; forget the ones that have.
_COUNT_LIVE = """
local live = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if redis.call('EXISTS', key) == 1 then
        live = live + 1
    else
        redis.call('SREM', KEYS[1], key)
    end
end
return live
"""


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


def heartbeat_redis() -> redis.Redis:
    """A client of the broker's Redis that gives up quickly, made once per process."""
    return _client_for(settings.CELERY_BROKER_URL)


def worker_beat(*, hostname: str, queues: Iterable[str] = (), processes: int = 1) -> None:
    """Say that the worker `hostname` is alive, for the next HEARTBEAT_TTL_SECONDS.

    The beat says which queues it serves with how many processes: admission sizes each
    queue's window by them.
    """
    key = HEARTBEAT_KEY_PREFIX + hostname
    beat = {"at": int(time.time()), "queues": sorted(queues), "processes": processes}
    pipe = heartbeat_redis().pipeline(transaction=False)
    pipe.set(key, json.dumps(beat), ex=HEARTBEAT_TTL_SECONDS)
    pipe.sadd(HEARTBEAT_SET_KEY, key)
    pipe.execute()


def worker_gone(*, hostname: str) -> None:
    """Stop counting the worker `hostname` at once."""
    key = HEARTBEAT_KEY_PREFIX + hostname
    pipe = heartbeat_redis().pipeline(transaction=False)
    pipe.delete(key)
    pipe.srem(HEARTBEAT_SET_KEY, key)
    pipe.execute()


def workers_alive() -> int:
    """Count the workers whose heartbeat has not expired; raises redis.RedisError."""
    return int(heartbeat_redis().eval(_COUNT_LIVE, 1, HEARTBEAT_SET_KEY))


def queue_processes() -> dict[str, int]:
    """Count the worker processes that serve each queue, by the live heartbeats.

    Raises redis.RedisError.
    """
    client = heartbeat_redis()
    keys = sorted(client.smembers(HEARTBEAT_SET_KEY))
    processes: Counter[str] = Counter()
    for raw in client.mget(keys) if keys else ():
        try:
            beat = json.loads(raw)
            for queue in beat["queues"]:
                processes[queue] += int(beat["processes"])
        except (TypeError, ValueError, KeyError):
            continue  # Expired meanwhile (None), or written by an older release.
    return dict(processes)


def serves_jobs(app: Celery) -> bool:
    """Return whether this worker consumes a queue other than those of Beat's tasks."""
    beat_queues = {route["queue"] for route in app.conf.task_routes.values()}
    return bool(set(app.amqp.queues.consume_from) - beat_queues)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Beat from the consumer's event loop while the worker takes tasks.

    The consumer starts its steps once it is connected and stops them when the connection is
    lost (then starts them again), so a worker that cannot reach the broker stops beating.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def include_if(self, consumer) -> bool:
        return serves_jobs(consumer.app)

    def __init__(self, consumer, **kwargs) -> None:
        super().__init__(consumer, **kwargs)
        self.timer_entry = None
        self.failing = False
        self.queues: list[str] = []
        self.processes = 1

    def start(self, consumer) -> None:
        self.queues = sorted(consumer.app.amqp.queues.consume_from)
        self.processes = consumer.controller.concurrency
        self.beat(consumer.hostname)  # At once, so that readiness need not wait a beat.
        self.timer_entry = consumer.timer.call_repeatedly(
            HEARTBEAT_SECONDS, self.beat, (consumer.hostname,)
        )

    def stop(self, consumer) -> None:
        if self.timer_entry is not None:
            consumer.timer.cancel(self.timer_entry)
            self.timer_entry = None
        # If Redis is out of reach, the key expires on its own.
        with contextlib.suppress(redis.RedisError):
            worker_gone(hostname=consumer.hostname)

    shutdown = stop

    def beat(self, hostname: str) -> None:
        try:
            worker_beat(hostname=hostname, queues=self.queues, processes=self.processes)
        except redis.RedisError as error:
            # Once per outage, not every beat.
            if not self.failing:
                logger.warning("worker heartbeat not written: %s", error)
            self.failing = True
        else:
            self.failing = False
