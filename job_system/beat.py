"""Beat's scheduler: django-celery-beat's, which waits for the database as Beat starts."""

import logging
import time
from types import FrameType

from celery import beat, platforms, signals
from django.db import DatabaseError, connection
from django_celery_beat import schedulers

logger = logging.getLogger(__name__)

# How often Beat, starting while the database is down, tries it again.
DATABASE_RETRY_SECONDS = 2.0


class DatabaseScheduler(schedulers.DatabaseScheduler):
    """django-celery-beat's scheduler, waiting for the database before it reads its entries.

    Running, it rides out database errors; starting, it read its entries unguarded, and Beat
    exited with the database down (taking every process of `make run` with it).
    """

    def setup_schedule(self) -> None:
        wait_for_database()
        super().setup_schedule()


def wait_for_database(retry_seconds: float = DATABASE_RETRY_SECONDS) -> None:
    """Return once the default database answers a query; retry every `retry_seconds`."""
    while True:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return
        except DatabaseError as exc:
            logger.warning("database unavailable, trying again in %s s: %s", retry_seconds, exc)
            connection.close()
            time.sleep(retry_seconds)


@signals.beat_init.connect
def stop_between_ticks_on_sigterm(sender: beat.Service, **kwargs) -> None:
    """Make SIGTERM and SIGINT stop Beat once its current tick is done, not inside it.

    Celery's own handler closes the scheduler and raises SystemExit wherever Beat is. Inside
    a task's publish, closing the scheduler closed the Redis connection being read; the
    SystemExit became that one send's error, which Beat logs and goes on, running until a
    SIGKILL. The loop now ends after its sleep (at most the 5 s max interval) and saves the
    schedule as it does on any exit.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        sender.stop()

    platforms.signals.update(SIGTERM=stop, SIGINT=stop)
