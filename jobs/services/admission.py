"""Admission: which waiting jobs get a broker message, and in what order.

Every pending job waits in the database. Each queue in Redis holds only a short window of
messages, about what its worker processes take next (JOB_QUEUE_WINDOW), and admission fills
the window from the waiting jobs:

- Across owners, in start-time fair queuing order: each owner's next job gets the start tag
  max(queue's virtual time, the finish tag of the owner's previous job), the job with the
  smallest tag goes first, and its finish tag is its start plus 1/fair_share_weight. Owners
  with a backlog take turns, a user of weight 3 three times as often as one of weight 1; an
  owner who was idle joins at the queue's virtual time, with no credit saved up.
- Within one owner's jobs, higher `priority` first, then the earliest due.
- Within the limits: a user's running and admitted jobs (JOB_USER_CONCURRENCY, or the user's
  max_running_jobs), and a type's across all users (a handler's concurrency_limit). Claims only
  take admitted jobs, and admissions take turns under one lock, counting the jobs admitted
  before, so no race between workers can pass a limit.

A job that breaks no limit, submitted while its queue has room and nobody waits, is admitted
in its request and published at once (may_admit_at_once): that is how a lightly loaded system
runs every job. The others are admitted by the request's process right after it, by a worker
whenever it finishes a message and its queue runs low, and by Beat's dispatcher every second.
"""

import contextlib
import heapq
import logging
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from job_system.heartbeats import heartbeat_redis, queue_processes
from jobs import handlers, queue
from jobs.models import FairShare, Job, QueueClock
from jobs.services import transitions

logger = logging.getLogger(__name__)

# Jobs that hold a place under the limits: running, or admitted and not yet claimed. The two
# halves are the predicates of the job_running_lease and job_admitted indexes, so the count
# reads those small indexes, not the backlog.
OCCUPYING = Q(status=Job.Status.IN_PROGRESS, lease_expires_at__isnull=False) | Q(
    status=Job.Status.PENDING, enqueued_at__isnull=False, claim_token=None
)
# What admission reads of a waiting job: enough to choose it and to publish its message.
ADMISSION_FIELDS = ("pk", "owner_id", "job_type", "queue", *queue.MESSAGE_FIELDS)
# The most jobs one admission looks at for one owner; more come in the next admission.
FETCH_LIMIT = 500
# How long a process trusts its count of the workers per queue.
PROCESSES_CACHE_SECONDS = 1.0
# A queue's "someone waits" flag outlives a crashed admission by at most this long; the
# dispatcher sets it again every second while jobs wait.
WAITING_FLAG_SECONDS = 30
_ADMISSION_LOCK_ID = 0x6A6F6273  # "jobs"


def queue_names() -> list[str]:
    return sorted({handler.queue for handler in handlers.all_handlers()})


def user_limit(owner) -> int:
    """The most jobs `owner` may have running or admitted at once; 0 for no limit."""
    if owner.max_running_jobs is not None:
        return owner.max_running_jobs
    return settings.JOB_USER_CONCURRENCY


def type_limit(job_type: str) -> int | None:
    handler = handlers.find(job_type)
    return handler.concurrency_limit if handler else None


def message_cost(job_type: str) -> float:
    """The share of a message a job takes: quick jobs share theirs (queue.publish)."""
    handler = handlers.find(job_type)
    return 1 / settings.JOB_MESSAGE_BATCH_SIZE if handler and handler.quick else 1.0


def queue_window(queue_name: str) -> int:
    """How many messages a queue may hold: one per process that serves it, and the window."""
    return _processes(queue_name) * (1 + settings.JOB_QUEUE_WINDOW)


_processes_cache: tuple[float, dict[str, int]] = (float("-inf"), {})


def forget_processes() -> None:
    """Count the worker processes afresh at the next admission."""
    global _processes_cache
    _processes_cache = (float("-inf"), {})


def _processes(queue_name: str) -> int:
    """The worker processes that serve a queue, by their heartbeats; at least 1.

    With no worker (or no Redis) admission still fills one process's window, so that a
    worker that starts finds work.
    """
    global _processes_cache
    read_at, counts = _processes_cache
    if time.monotonic() - read_at > PROCESSES_CACHE_SECONDS:
        try:
            counts = queue_processes()
        except redis.RedisError:
            counts = {}
        _processes_cache = (time.monotonic(), counts)
    return max(1, counts.get(queue_name, 0))


@dataclass
class Occupancy:
    """Jobs running or admitted, by owner and by type, and each queue's messages in use."""

    by_owner: Counter[int] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)

    @classmethod
    def load(cls, *, now: datetime) -> "Occupancy":
        rows = (
            Job.objects.filter(OCCUPYING)
            .order_by()
            .values_list("owner_id", "job_type", "queue")
            .annotate(
                count=Count("pk"),
                # Admitted, due and not yet claimed: in the queue, or about to be.
                queued=Count("pk", filter=Q(status=Job.Status.PENDING, run_after__lte=now)),
            )
        )
        occupancy = cls()
        for owner_id, job_type, queue_name, count, queued in rows:
            occupancy.by_owner[owner_id] += count
            occupancy.by_type[job_type] += count
            occupancy.messages[queue_name] += queued * message_cost(job_type)
        return occupancy

    def add(self, job: Job, *, due: bool = True) -> None:
        self.by_owner[job.owner_id] += 1
        self.by_type[job.job_type] += 1
        if due:
            self.messages[job.queue] += message_cost(job.job_type)

    def type_full(self, job_type: str) -> bool:
        limit = type_limit(job_type)
        return limit is not None and self.by_type[job_type] >= limit

    def full_types(self) -> list[str]:
        return [handler.name for handler in handlers.all_handlers() if self.type_full(handler.name)]


def may_admit_at_once(*, owner, jobs: list[Job]) -> bool:
    """Whether the request's jobs may skip admission: published at once, as on an idle system.

    Only when no limit applies to them, nobody waits in their queues, and each queue has room
    for them beside the messages it holds. One Redis round trip.
    """
    if user_limit(owner) or any(type_limit(job.job_type) is not None for job in jobs):
        return False
    needed: Counter[str] = Counter()
    for job in jobs:
        needed[job.queue] += message_cost(job.job_type)
    try:
        states = _queue_states(sorted(needed))
    except redis.RedisError:
        return False  # Admission decides, once the broker is back.
    return not any(
        waiting or length + math.ceil(needed[name]) > queue_window(name)
        for name, (waiting, length) in states.items()
    )


def _queue_states(names: list[str]) -> dict[str, tuple[bool, int]]:
    """For each queue, whether jobs wait for room in it, and its messages; one round trip."""
    pipe = heartbeat_redis().pipeline(transaction=False)
    for name in names:
        pipe.exists(_waiting_key(name))
        pipe.llen(name)  # Celery's Redis transport keeps a queue's messages in a list so named.
    replies = pipe.execute()
    return {name: (bool(replies[2 * i]), replies[2 * i + 1]) for i, name in enumerate(names)}


def admit_on_commit(queues: Iterable[str], *, from_request: bool = False) -> None:
    """Run an admission for `queues` once the surrounding transaction commits."""
    queue.after_commit(admit=sorted(set(queues)), from_request=from_request)


def jobs_admit_if_waiting() -> int:
    """Admit jobs to each queue where some wait and the messages run low; count them.

    A worker calls this after each message, so a queue is refilled as it drains. One Redis
    round trip when nothing is to be done.

    Only one worker admits to a queue at a time; the others go on to their next message
    rather than wait for the admission lock. When a queue ran low, every process that served
    it used to finish a message at about the same moment and admit, one after another, each
    holding its process: bulk jobs drained a fifth slower than before admission. A job that
    ends while another worker admits may wait for the next admission for its place, at most
    the dispatcher's second.
    """
    try:
        states = _queue_states(queue_names())
        low = [
            name
            for name, (waiting, length) in states.items()
            if waiting and length < _processes(name) and _start_admitting(name)
        ]
    except redis.RedisError:
        return 0  # The dispatcher admits once the broker is back.
    if not low:
        return 0
    try:
        return jobs_admit(queues=low)
    except Exception:
        # The worker's own job is recorded; the dispatcher admits within a second.
        logger.exception("admission after a message failed; the dispatcher will retry")
        return 0
    finally:
        with contextlib.suppress(redis.RedisError):
            heartbeat_redis().delete(*[_admitting_key(name) for name in low])


def _start_admitting(queue_name: str) -> bool:
    """Whether this worker may admit to the queue now: no other worker does."""
    # Expires on its own if the worker dies admitting.
    return bool(heartbeat_redis().set(_admitting_key(queue_name), 1, nx=True, px=5000))


def _admitting_key(queue_name: str) -> str:
    return f"jobsys:admitting:{queue_name}"


def jobs_admit(*, queues: Iterable[str] | None = None, ahead: bool = False) -> int:
    """Admit waiting jobs to `queues` (all by default) in fair order; count them.

    With `ahead`, also admit the jobs due within the look-ahead, which are published with an
    ETA so that they start on time (Beat's dispatcher does, every second).
    """
    admitted = 0
    if ahead:
        admitted += _admit_ahead()
    for name in queue_names() if queues is None else queues:
        admitted += _admit_due(name)
    return admitted


def _admit_due(queue_name: str) -> int:
    with transaction.atomic():
        now = _lock()
        owner_ids = _waiting_owners(queue_name, now=now)
        if not owner_ids:
            _flag_waiting(queue_name, False)
            return 0
        occupancy = Occupancy.load(now=now)
        room = queue_window(queue_name) - occupancy.messages[queue_name]
        if room <= 0:
            _flag_waiting(queue_name, True)
            return 0
        turns = _Turns(queue_name, owner_ids, occupancy, now=now)
        chosen = turns.pick(room)
        admitted = _admit(chosen, now=now)
        turns.save()
    _flag_waiting(queue_name, turns.left_waiting)
    return admitted


def _admit_ahead() -> int:
    """Admit the jobs that fall due within the look-ahead and break no limit."""
    with transaction.atomic():
        now = _lock()
        soon = Job.objects.filter(
            status=Job.Status.PENDING,
            enqueued_at=None,
            run_after__gt=now,
            run_after__lte=queue.publish_horizon(now),
        ).only(*ADMISSION_FIELDS)
        candidates = list(soon.order_by("run_after")[:FETCH_LIMIT])
        if not candidates:
            return 0
        owner_ids = {job.owner_id for job in candidates}
        occupancy = Occupancy.load(now=now)
        limits = {owner.pk: user_limit(owner) for owner in _owners(owner_ids)}
        chosen = []
        for job in candidates:
            limit = limits.get(job.owner_id, 0)
            if occupancy.type_full(job.job_type) or (
                limit and occupancy.by_owner[job.owner_id] >= limit
            ):
                continue  # It waits for its turn when due, like any other.
            occupancy.add(job, due=False)
            chosen.append(job)
        return _admit(chosen, now=now)


class _Turns:
    """One admission's round of turns among the owners who wait in one queue."""

    def __init__(
        self, queue_name: str, owner_ids: list[int], occupancy: Occupancy, *, now: datetime
    ) -> None:
        self.queue_name = queue_name
        self.occupancy = occupancy
        self.now = now
        self.owners = {owner.pk: owner for owner in _owners(owner_ids)}
        self.shares = {
            share.owner_id: share
            for share in FairShare.objects.filter(queue=queue_name, owner_id__in=owner_ids)
        }
        self.clock = QueueClock.objects.filter(pk=queue_name).first() or QueueClock(
            queue=queue_name
        )
        self.next_jobs: dict[int, deque[Job]] = {}
        self.fetch_size = FETCH_LIMIT
        self.left_waiting = False

    def pick(self, room: float) -> list[Job]:
        """Choose jobs in fair order until the queue's room or the waiting jobs run out."""
        cheapest = min(message_cost(handler.name) for handler in handlers.all_handlers())
        self.fetch_size = max(1, min(FETCH_LIMIT, math.ceil(room / cheapest)))
        turns = [(self._start_tag(owner_id), owner_id) for owner_id in self.owners]
        heapq.heapify(turns)
        chosen: list[Job] = []
        while turns:
            start, owner_id = heapq.heappop(turns)
            job = self._next_job(owner_id)
            if job is None:
                continue  # Nothing it may run now; it gets a start tag again when it has.
            if message_cost(job.job_type) > room + 1e-9:
                self.left_waiting = True
                break
            room -= message_cost(job.job_type)
            chosen.append(job)
            self.occupancy.add(job)
            share = self._share(owner_id)
            self.clock.virtual_time = start
            share.finish = start + 1 / self.owners[owner_id].fair_share_weight
            heapq.heappush(turns, (self._start_tag(owner_id), owner_id))
        return chosen

    def save(self) -> None:
        """Keep the owners' finish tags and the queue's virtual time for the next admission."""
        FairShare.objects.bulk_create(
            self.shares.values(),
            update_conflicts=True,
            unique_fields=["owner", "queue"],
            update_fields=["finish"],
        )
        QueueClock.objects.bulk_create(
            [self.clock],
            update_conflicts=True,
            unique_fields=["queue"],
            update_fields=["virtual_time"],
        )

    def _start_tag(self, owner_id: int) -> float:
        return max(self.clock.virtual_time, self._share(owner_id).finish)

    def _share(self, owner_id: int) -> FairShare:
        if owner_id not in self.shares:
            self.shares[owner_id] = FairShare(owner_id=owner_id, queue=self.queue_name)
        return self.shares[owner_id]

    def _next_job(self, owner_id: int) -> Job | None:
        """The owner's next job that breaks no limit, or None; fetched once per admission."""
        owner = self.owners.get(owner_id)
        if owner is None:
            return None  # Deleted since the scan: its jobs went with it.
        limit = user_limit(owner)
        if limit and self.occupancy.by_owner[owner_id] >= limit:
            self.left_waiting = True  # It goes on when one of its jobs ends.
            return None
        jobs = self.next_jobs.get(owner_id)
        if jobs is None:
            jobs = self.next_jobs[owner_id] = deque(self._fetch(owner_id, limit))
        while jobs:
            job = jobs.popleft()
            if not self.occupancy.type_full(job.job_type):
                return job
            self.left_waiting = True  # It goes on when a job of that type ends.
        return None

    def _fetch(self, owner_id: int, limit: int) -> list[Job]:
        size = self.fetch_size
        if limit:
            size = min(size, limit - self.occupancy.by_owner[owner_id])
        waiting = (
            Job.objects.filter(
                queue=self.queue_name,
                owner_id=owner_id,
                status=Job.Status.PENDING,
                enqueued_at=None,
                run_after__lte=self.now,
            )
            .exclude(job_type__in=self.occupancy.full_types())
            .order_by("-priority", "run_after")
            .only(*ADMISSION_FIELDS)
        )
        jobs = list(waiting[:size])
        if len(jobs) == size:
            self.left_waiting = True  # It may have more than one fetch could take.
        return jobs


def _owners(owner_ids: Iterable[int]) -> list:
    return list(
        get_user_model()
        .objects.filter(pk__in=list(owner_ids))
        .only("pk", "max_running_jobs", "fair_share_weight")
    )


def _waiting_owners(queue_name: str, *, now: datetime) -> list[int]:
    """The owners with due jobs waiting for admission to the queue, in owner order."""
    with connection.cursor() as cursor:
        cursor.execute(*waiting_owners_statement(queue_name, now=now))
        return [row[0] for row in cursor.fetchall()]


def waiting_owners_statement(queue_name: str, *, now: datetime) -> tuple[str, list]:
    """SQL and parameters of _waiting_owners(): a loose index scan of job_awaiting_admission.

    One index probe per owner, however many jobs each has waiting, where a DISTINCT reads
    every waiting job (10,000 for one user's backlog), on every admission.
    """
    table = Job._meta.db_table
    waiting = f"""
        FROM {table} WHERE queue = %s AND status = 'pending' AND enqueued_at IS NULL
        AND run_after <= %s"""
    sql = f"""
        WITH RECURSIVE owners(owner_id) AS (
            SELECT MIN(owner_id) {waiting}
            UNION ALL
            SELECT (SELECT MIN(owner_id) {waiting} AND owner_id > owners.owner_id)
            FROM owners WHERE owners.owner_id IS NOT NULL
        )
        SELECT owner_id FROM owners WHERE owner_id IS NOT NULL
    """  # noqa: S608
    return sql, [queue_name, now, queue_name, now]


def _admit(jobs: list[Job], *, now: datetime) -> int:
    """Mark the chosen jobs admitted and publish them, in order, after commit; count them.

    One UPDATE, in the admission's transaction. A job cancelled since it was read (cancelling
    takes no admission lock) is not admitted; only then are the admitted ones read back.
    """
    if not jobs:
        return 0
    token = uuid.uuid4()
    waiting = Job.objects.filter(
        pk__in=[job.pk for job in jobs], status=Job.Status.PENDING, enqueued_at=None
    )
    admitted = transitions.apply_all(
        transitions.ADMIT, waiting, enqueued_at=now, dispatch_token=token
    )
    if admitted < len(jobs):
        taken = set(
            Job.objects.filter(dispatch_token=token, pk__in=[job.pk for job in jobs]).values_list(
                "pk", flat=True
            )
        )
        jobs = [job for job in jobs if job.pk in taken]
    queue.publish_on_commit([queue.message_for(job) for job in jobs])
    return len(jobs)


def mark_enqueued_and_publish(
    jobs: QuerySet[Job], *, now: datetime, limit: int | None = None
) -> int:
    """Mark pending jobs as admitted and publish them after commit; count them."""
    # Each caller stamps the rows it takes with its own token and publishes only those, so
    # two admissions (or an admission and the reaper) never publish the same job together.
    candidates = list(jobs.order_by("run_after").values_list("pk", flat=True)[:limit])
    if not candidates:
        return 0
    token = uuid.uuid4()
    with transaction.atomic():
        transitions.apply_all(
            transitions.ADMIT, jobs.filter(pk__in=candidates), enqueued_at=now, dispatch_token=token
        )
        taken = Job.objects.filter(pk__in=candidates, dispatch_token=token)
        messages = [queue.message_for(job) for job in taken.only(*queue.MESSAGE_FIELDS)]
        queue.publish_on_commit(messages)
    return len(messages)


def _lock() -> datetime:
    """Take the admission lock until the transaction ends, and return the time it was taken.

    Admissions take turns. SQLite's transactions begin IMMEDIATE here (settings), which takes
    the database's write lock already. An admission reads the clock only once it holds the
    lock: with a time from before a wait behind bulk inserts, the jobs they inserted would
    look due later, within the look-ahead, and be admitted ahead with no room counted.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADMISSION_LOCK_ID])
    return timezone.now()


def _waiting_key(queue_name: str) -> str:
    return f"jobsys:jobs-waiting:{queue_name}"


def _flag_waiting(queue_name: str, waiting: bool) -> None:
    """Tell workers whether jobs wait for room in the queue (jobs_admit_if_waiting)."""
    try:
        if waiting:
            heartbeat_redis().set(_waiting_key(queue_name), 1, ex=WAITING_FLAG_SECONDS)
        else:
            heartbeat_redis().delete(_waiting_key(queue_name))
    except redis.RedisError:
        logger.debug("could not flag queue %s as waiting", queue_name)
