"""Beat's scheduler: django-celery-beat's, which waits for the database as Beat starts."""

import logging
import time

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
