"""The yardstick for `scripts/bench.py`: raw Celery on the same Redis, with no Django at all.

A no-op task that only marks itself done (INCR on a Redis counter), run by a worker with the
same pool, concurrency and acknowledgement settings as the service's workers:

    REDIS_URL=redis://127.0.0.1:6379/0 celery -A scripts.bench_celery worker -Q raw-bench
"""

import os

import redis
from celery import Celery

QUEUE = "raw-bench"
DONE_KEY = "raw-bench:done"

app = Celery("raw_bench", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
)
counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="raw_bench.noop")
def noop() -> None:
    counter.incr(DONE_KEY)
