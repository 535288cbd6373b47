"""Numbering events, and telling the listeners after the commit that a user has new ones.

The events themselves are rows that jobs.services.transitions inserts beside the change they
describe, in the same statement or transaction; this module gives them their numbers and
announces them. Announcements are hints: the Redis message says only "this user has new
events", and whoever listens reads them from the table.
"""

import logging
from functools import partial

import redis
from django.db import connections, transaction

from events.models import EventStream, EventType
from job_system.cache import cache_redis
from jobs.models import Job, WaitingFor

logger = logging.getLogger(__name__)

# Redis: the channel that says which user has new events (the message is the user's id), the
# users whose events webhooks fan out, and per such user a flag that a fan-out is on its way.
CHANNEL = "jobsys:events"
HOOKED_OWNERS_KEY = "jobsys:webhook-owners"
FAN_OUT_KEY = "jobsys:fan-out:{owner}"
FAN_OUT_TASK = "webhooks.tasks.webhooks_fan_out"
# How long a fan-out counts as on its way: if its task was lost, the next event sends another.
FAN_OUT_PENDING_MS = 60_000
WEBHOOK_QUEUE = "webhooks"

EVENT_FOR_STATUS = {
    Job.Status.PENDING: EventType.PENDING,
    Job.Status.IN_PROGRESS: EventType.STARTED,
    Job.Status.COMPLETED: EventType.COMPLETED,
    Job.Status.FAILED: EventType.FAILED,
    Job.Status.CANCELLED: EventType.CANCELLED,
}

_STREAM_TABLE = EventStream._meta.db_table


def take_numbers_sql(source: str) -> str:
    """SQL that gives out the next numbers of a user's events, answering with the last one.

    `source` yields (owner_id, how many numbers); the row's lock, held to the end of the
    transaction, is what keeps a user's events committing in the order of their numbers.
    Both databases read it (SQLite since 3.35).
    """
    table = _STREAM_TABLE
    return (
        f"INSERT INTO {table} (owner_id, last_seq, pruned_through, fanned_out_seq) "  # noqa: S608
        f"SELECT owner_id, taken, 0, 0 FROM ({source}) AS taking WHERE true "
        f"ON CONFLICT (owner_id) DO UPDATE SET last_seq = {table}.last_seq + excluded.last_seq "
        "RETURNING last_seq"
    )


def take_numbers(owner_id: int, count: int, *, using: str) -> int:
    """Give out `count` numbers for the owner's next events; return the last of them."""
    with connections[using].cursor() as cursor:
        cursor.execute(take_numbers_sql("SELECT %s AS owner_id, %s AS taken"), [owner_id, count])
        return cursor.fetchone()[0]


def waiting_for(status: str, *, run_after, now, retrying: bool) -> str:
    """What a pending job waits for as its row says at the change, for its event.

    Only the job's own columns: whether a limit holds it back is a question of the moment,
    which GET /api/jobs/{id}/ answers.
    """
    if status != Job.Status.PENDING:
        return ""
    if run_after is not None and run_after > now:
        return WaitingFor.RETRY_BACKOFF if retrying else WaitingFor.SCHEDULED_TIME
    return WaitingFor.WORKER


def announce_on_commit(owner_id: int, *, using: str) -> None:
    """After the commit (at once outside a transaction), tell listeners of the new events."""
    transaction.on_commit(partial(announce, owner_id), using=using)


# PUBLISH, and if the owner has webhooks and no fan-out is on its way, mark one as such and
# answer 1: the caller sends it. One round trip.
_ANNOUNCE = """
redis.call('PUBLISH', KEYS[1], ARGV[1])
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
    if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 1 end
end
return 0
"""


def announce(owner_id: int) -> None:
    """Tell the streams that the owner has new events, and start a webhook fan-out if due.

    A lost announcement delays, and never loses, an event: streams read the table again at
    each keep-alive, and Beat's webhook sweep fans out what an announcement missed.
    """
    keys = [CHANNEL, HOOKED_OWNERS_KEY, FAN_OUT_KEY.format(owner=owner_id)]
    try:
        fan_out = cache_redis().eval(_ANNOUNCE, 3, *keys, owner_id, FAN_OUT_PENDING_MS)
    except redis.RedisError as error:
        logger.warning("could not announce events of user %s: %s", owner_id, error)
        return
    if fan_out:
        send_fan_out(owner_id)


def send_fan_out(owner_id: int) -> None:
    """Send the task that makes the owner's new events into webhook deliveries."""
    from job_system.celery import app

    try:
        app.send_task(FAN_OUT_TASK, args=[owner_id], queue=WEBHOOK_QUEUE)
    except Exception as error:
        logger.warning("could not send the webhook fan-out of user %s: %s", owner_id, error)
