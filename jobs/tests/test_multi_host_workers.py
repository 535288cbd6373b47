"""Workers on different hosts, each serving some queues, sharing one Redis and one database.

Two worker processes stand in for two hosts (their --hostname differs). The session's worker
also serves default, long and cpu, so this test publishes to queue names of its own that
mirror the routing (`<prefix>-default`, `<prefix>-long`, `<prefix>-cpu`): only these two
workers can take them, and the assertion on which worker ran what is deterministic.
"""

import uuid

import pytest
from django.utils import timezone

from job_system.celery import app as celery_app
from jobs import queue
from jobs.models import Job
from jobs.tests.live import start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def publish_routed(job: Job, *, prefix: str) -> str:
    """Publish as jobs.queue does, to this test's copy of the job type's queue."""
    routed = f"{prefix}-{queue.queue_for(job.job_type)}"
    celery_app.send_task(queue.RUN_JOB_TASK, args=[str(job.pk)], queue=routed)
    return routed


def test_each_queue_runs_on_the_worker_host_that_serves_it(job_factory, celery_log_dir):
    prefix = f"hosts-{uuid.uuid4().hex[:8]}"
    host_a = start_worker(f"{prefix}-a", celery_log_dir, queues=f"{prefix}-default")
    host_b = start_worker(f"{prefix}-b", celery_log_dir, queues=f"{prefix}-long,{prefix}-cpu")
    try:
        # enqueued_at set: no dispatcher publishes them to the real queues meanwhile.
        published = {"enqueued_at": timezone.now()}
        jobs = {
            "echo": job_factory(job_type="echo", **published),
            "sleep": job_factory(job_type="sleep", parameters={"seconds": 0.2}, **published),
            "primes": job_factory(job_type="primes", parameters={"limit": 1000}, **published),
        }
        queues = {name: publish_routed(job, prefix=prefix) for name, job in jobs.items()}
        finished = {
            name: wait_for(
                lambda job=job: Job.objects.filter(pk=job.pk, status=Job.Status.COMPLETED).first(),
                timeout=60,
                message=f"the {name} job did not complete",
            )
            for name, job in jobs.items()
        }
    finally:
        host_a.stop()
        host_b.stop()

    assert queues == {
        "echo": f"{prefix}-default",
        "sleep": f"{prefix}-long",
        "primes": f"{prefix}-cpu",
    }
    expected_worker = {"echo": "a", "sleep": "b", "primes": "b"}
    for name, job in finished.items():
        worker = f"{prefix}-{expected_worker[name]}@"
        assert job.worker.startswith(worker), (name, job.worker)
        assert [attempt.worker.split("@")[0] + "@" for attempt in job.attempt_log.all()] == [worker]
