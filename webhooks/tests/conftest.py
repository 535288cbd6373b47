import ipaddress
import uuid

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import Job
from jobs.services import transitions
from webhooks.endpoints import endpoint_create
from webhooks.tests.receiver import Receiver


@pytest.fixture
def loopback_allowed(settings):
    """Let deliveries reach 127.0.0.1, as production never would; and retry quickly."""
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.1/32")]
    settings.WEBHOOK_RETRY_SCHEDULE = [5.0, 60.0]
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def endpoint_for(verified_user):
    def make(url: str, **fields):
        fields.setdefault("event_types", ["job.completed", "job.failed", "job.cancelled"])
        return endpoint_create(owner=fields.pop("owner", verified_user), url=url, **fields)

    return make


@pytest.fixture
def finished_job(verified_user):
    """Run a job through its life by the services, as a worker would: its events are real."""

    def finish(owner=None, **fields):
        fields.setdefault("job_type", "echo")
        job, _ = services.job_create(
            owner=owner or verified_user, name="hooked", parameters={}, **fields
        )
        # Admitted, as an idle system would at once: whether it was depends on the queues.
        jobs = Job.objects.filter(pk=job.pk, enqueued_at=None)
        transitions.apply_all(
            transitions.ADMIT, jobs, enqueued_at=timezone.now(), dispatch_token=uuid.uuid4()
        )
        claimed = services.job_claim(job_id=job.pk, worker="w")
        services.job_complete(job=claimed, output={"ok": True}, duration_ms=1)
        return job

    return finish


@pytest.fixture(scope="session")
def live_webhooks(django_db_setup, django_db_blocker, celery_log_dir):
    """The Procfile's webhooks worker for the session, allowed to reach loopback receivers."""
    from jobs.tests.live import start_procfile_worker, subprocess_env

    env = subprocess_env(WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32", WEBHOOK_WORKER_CONCURRENCY="4")
    worker = start_procfile_worker("webhooks", celery_log_dir, env)
    yield worker
    worker.stop()
