from celery import shared_task

from events.retention import events_purge_expired


@shared_task(ignore_result=True)
def purge_expired_events() -> int:
    return events_purge_expired()
