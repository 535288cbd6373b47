"""Numbering events, and telling the listeners after the commit that a user has new ones.

The events themselves are rows that jobs.services.transitions inserts beside the change they
describe, in the same statement or transaction, without a number. Numbers are given after
the commit, by whoever reads them (the stream, the webhook fan-out): one numbering of a
user's events at a time takes every committed event that has none, so numbers follow the
order of the numberings' commits, and a reader that saw number n has seen every smaller one.
Numbering at write time instead would lock the user's counter from the change to its
commit, WAL flush included, and a busy user's every claim and completion would queue on it.

Announcements are hints: the Redis message says only "this user has new events", and
whoever listens numbers and reads them from the table. Most users listen to nothing (no open
stream, no webhook), so a process that heard so from Redis believes it for UNHEARD_SECONDS and
announces nothing for that user meanwhile: a round trip less per change. A listener that
appears meanwhile loses no event, and waits little: a new stream reads the table often for
that long (events.stream), and a new webhook's first events are fanned out by Beat's sweep.
"""

import logging
import time
from functools import partial

import redis
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from events.limits import USER_STREAMS_KEY
from events.models import Event, EventStream, EventType
from job_system.cache import cache_redis
from jobs.models import Job, WaitingFor

logger = logging.getLogger(__name__)

# Redis: the channel that says which user has new events (the message is the user's id), the
# users whose events webhooks fan out (a hash: user id -> ",the,event,types,they,want,"),
# and per such user a flag that a fan-out is on its way.
CHANNEL = "jobsys:events"
HOOKED_OWNERS_KEY = "jobsys:webhook-owners"
FAN_OUT_KEY = "jobsys:fan-out:{owner}"
FAN_OUT_TASK = "webhooks.tasks.webhooks_fan_out"
# How long a fan-out counts as on its way: if its task was lost, the next event sends another.
FAN_OUT_PENDING_MS = 60_000
# How long a process believes that a user has no listener, from Redis's answer.
UNHEARD_SECONDS = 1.0
# The users this process believes unheard, with the monotonic time that belief ends. Pruned
# when it grows past this, so a process that serves many users holds a bounded map.
_unheard: dict[int, float] = {}
_UNHEARD_MAX_ENTRIES = 10_000
WEBHOOK_QUEUE = "webhooks"

EVENT_FOR_STATUS = {
    Job.Status.PENDING: EventType.PENDING,
    Job.Status.IN_PROGRESS: EventType.STARTED,
    Job.Status.COMPLETED: EventType.COMPLETED,
    Job.Status.FAILED: EventType.FAILED,
    Job.Status.CANCELLED: EventType.CANCELLED,
}

_STREAM_TABLE = EventStream._meta.db_table
_EVENT_TABLE = Event._meta.db_table
# pg_advisory_xact_lock's first key for numbering a user's events; the second is the user's id.
_NUMBERING_LOCK = 0x4E554D  # "NUM"


# Gives out the next numbers of a user's events: `source` yields (owner_id, how many). The
# row's lock lasts to the end of the transaction. Both databases read it (SQLite since 3.35).
_TAKE_NUMBERS = (
    f"INSERT INTO {_STREAM_TABLE} (owner_id, last_seq, pruned_through, fanned_out_seq) "  # noqa: S608
    "SELECT owner_id, taken, 0, 0 FROM ({source}) AS taking WHERE true "
    f"ON CONFLICT (owner_id) DO UPDATE SET last_seq = {_STREAM_TABLE}.last_seq "
    "+ excluded.last_seq RETURNING last_seq"
)


def take_numbers(owner_id: int, count: int, *, using: str) -> int:
    """Give out `count` numbers for the owner's next events; return the last of them.

    With 0, it only locks the owner's stream row for the transaction and says where it is.
    """
    with connections[using].cursor() as cursor:
        source = "SELECT %s AS owner_id, %s AS taken"
        cursor.execute(_TAKE_NUMBERS.format(source=source), [owner_id, count])
        return cursor.fetchone()[0]


_CHOSEN_COUNT = "SELECT %s AS owner_id, count(*) AS taken FROM chosen"
# Events one numbering takes at most, the oldest first: a backlog that nobody read is
# numbered by the reads that follow, in short transactions.
NUMBERING_BATCH = 10_000


def number_events(owner_id: int, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Number the owner's committed events that have no number yet, in the order stored."""
    event = _EVENT_TABLE
    connection = connections[using]
    # Names from the models; every value is a parameter.
    unnumbered = f"FROM {event} WHERE owner_id = %s AND seq IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 {unnumbered} LIMIT 1", [owner_id])
        if cursor.fetchone() is None:
            return  # The common case, and no lock for it.
    # One numbering per user at a time, held to its commit. On SQLite the transaction's
    # write lock is that, and nothing else commits meanwhile. On PostgreSQL an advisory lock,
    # taken before the statement that numbers, so that its snapshot holds what the numbering
    # before committed; and one statement, because an event stored before the chosen ones
    # may commit between two statements.
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_NUMBERING_LOCK, owner_id])
            cursor.execute(
                f"WITH chosen AS (SELECT id, row_number() OVER (ORDER BY id) AS n "  # noqa: S608
                f"{unnumbered} ORDER BY id LIMIT %s), "
                f"numbers AS ({_TAKE_NUMBERS.format(source=_CHOSEN_COUNT)}) "
                f"UPDATE {event} SET seq = numbers.last_seq - (SELECT count(*) FROM chosen) "
                f"+ chosen.n FROM chosen, numbers WHERE {event}.id = chosen.id",
                [owner_id, NUMBERING_BATCH, owner_id],
            )
            return
        cursor.execute(
            f"SELECT count(*), max(id) FROM (SELECT id {unnumbered} "  # noqa: S608
            "ORDER BY id LIMIT %s) AS oldest",
            [owner_id, NUMBERING_BATCH],
        )
        count, through = cursor.fetchone()
        if not count:
            return
        last = take_numbers(owner_id, count, using=using)
        cursor.execute(
            f"UPDATE {event} SET seq = %s + numbered.n FROM (SELECT id, "  # noqa: S608
            f"row_number() OVER (ORDER BY id) AS n {unnumbered} AND id <= %s) AS numbered "
            f"WHERE {event}.id = numbered.id",
            [last - count, owner_id, through],
        )


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


def announce_on_commit(owner_id: int, event_type: str, *, using: str) -> None:
    """After the commit (at once outside a transaction), tell listeners of the new events."""
    transaction.on_commit(partial(announce, owner_id, event_type), using=using)


# If the owner has an open stream, PUBLISH. If they have webhooks for this type of event and
# no fan-out is on its way, mark one as such and answer 1: the caller sends it. Answer -1 if
# they have neither a stream nor a webhook, else 0. One round trip.
_ANNOUNCE = """
local streaming = redis.call('EXISTS', KEYS[4]) == 1
if streaming then redis.call('PUBLISH', KEYS[1], ARGV[1]) end
local wanted = redis.call('HGET', KEYS[2], ARGV[1])
if not wanted then return streaming and 0 or -1 end
if string.find(wanted, ',' .. ARGV[3] .. ',', 1, true) then
    if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 1 end
end
return 0
"""


def announce(owner_id: int, event_type: str) -> None:
    """Tell the streams that the owner has new events, and start a webhook fan-out if due.

    A lost announcement delays, and never loses, an event: streams read the table again at
    each keep-alive, and Beat's webhook sweep fans out what an announcement missed.
    """
    now = time.monotonic()
    if _unheard.get(owner_id, 0.0) > now:
        return
    keys = [
        CHANNEL,
        HOOKED_OWNERS_KEY,
        FAN_OUT_KEY.format(owner=owner_id),
        USER_STREAMS_KEY.format(owner=owner_id),
    ]
    try:
        answer = cache_redis().eval(_ANNOUNCE, 4, *keys, owner_id, FAN_OUT_PENDING_MS, event_type)
    except redis.RedisError as error:
        logger.warning("could not announce events of user %s: %s", owner_id, error)
        return
    if answer < 0:
        _believe_unheard(owner_id, until=now + UNHEARD_SECONDS)
    elif answer:
        fan_out_now(owner_id)


def forget_unheard() -> None:
    """Ask Redis again at each user's next announcement."""
    _unheard.clear()


def _believe_unheard(owner_id: int, *, until: float) -> None:
    if len(_unheard) >= _UNHEARD_MAX_ENTRIES:
        now = time.monotonic()
        for stale in [owner for owner, ends in _unheard.items() if ends <= now]:
            del _unheard[stale]
        if len(_unheard) >= _UNHEARD_MAX_ENTRIES:
            _unheard.clear()
    _unheard[owner_id] = until


def fan_out_now(owner_id: int) -> None:
    """Make the owner's new events into webhook deliveries here, and send those on.

    In the process that made the change, right after its commit: a fan-out task would add
    a trip through the broker to every webhook's first attempt. If it fails, the task does
    it (and Beat's sweep, if the task is lost too).
    """
    from job_system.celery import app

    try:
        app.tasks[FAN_OUT_TASK](owner_id)
    except Exception:
        logger.exception("webhook fan-out of user %s failed here; sending it", owner_id)
        send_fan_out(owner_id)


def send_fan_out(owner_id: int) -> None:
    """Send the task that makes the owner's new events into webhook deliveries."""
    from job_system.celery import app

    try:
        app.send_task(FAN_OUT_TASK, args=[owner_id], queue=WEBHOOK_QUEUE)
    except Exception as error:
        logger.warning("could not send the webhook fan-out of user %s: %s", owner_id, error)
