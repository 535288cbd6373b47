"""The Celery application shared by workers, Beat and the web processes that publish."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready
from django.conf import settings
from django.db import close_old_connections
from kombu.message import Message

from job_system.heartbeats import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "job_system.settings")
# Celery's Django fixup runs Django's system checks as each worker starts, and they import the
# URLconf: every view and serializer, the admin, the OpenAPI generator, 6 MB in each worker
# process that none of them uses. `migrate`, which a deploy and `make run` run first, runs
# the same checks.
os.environ.setdefault("CELERY_SKIP_CHECKS", "true")


def _ack_or_reconnect(self: Message, logger, errors, multiple: bool = False) -> None:
    """Acknowledge the message; on a connection error, log it and raise it.

    kombu's own ack_log_error logs a connection error and carries on. But its Redis transport
    has stopped polling the broker by then (on the connection's disconnect), counting on that
    error to reach the consumer and make it reconnect: a worker with no other connection to
    watch (remote control off, as the housekeeping worker runs) sat idle for good while Beat's
    tasks piled up in its queue (make chaos: Redis restarted as it acknowledged a task). Raised,
    the error restarts the consumer as any lost connection does. The message, unacknowledged,
    comes back, and its task finds in the database what was done already.
    """
    try:
        self.ack(multiple=multiple)
    except errors as exc:
        logger.critical("Couldn't ack %r, reason:%r", self.delivery_tag, exc, exc_info=True)
        raise


Message.ack_log_error = _ack_or_reconnect

app = Celery("job_system")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(WorkerHeartbeat)


@task_prerun.connect
@task_postrun.connect
def close_unusable_connections(sender=None, **kwargs) -> None:
    """Around each task, as around each request: drop broken or expired connections only."""
    # An eager task runs inside its caller's transaction, whose connection must stay open.
    if not getattr(sender.request, "is_eager", False):
        close_old_connections()


@worker_ready.connect
def start_worker_metrics_server(**kwargs) -> None:
    """With WORKER_METRICS_PORT set, serve this host's metrics from the worker's main process.

    worker_ready is sent once, in the main process, which lives as long as the worker; its
    children come and go.
    """
    if settings.WORKER_METRICS_PORT:
        # Not at the top: prometheus_client picks its mode from PROMETHEUS_MULTIPROC_DIR when
        # first imported, and this module is imported before settings load `.env`.
        from job_system.metrics import serve_worker_metrics

        serve_worker_metrics(
            address=settings.WORKER_METRICS_ADDRESS, port=settings.WORKER_METRICS_PORT
        )
