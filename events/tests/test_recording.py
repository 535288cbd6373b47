"""Every change of a job's status is an event, numbered per user, told only once committed."""

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from events import recording
from events.limits import UserSlots
from events.models import Event, EventStream, EventType
from job_system.cache import cache_redis
from jobs import services
from jobs.models import Job
from jobs.services import transitions
from jobs.tests.concurrency import run_together

pytestmark = pytest.mark.django_db


def _told(owner) -> list[tuple[int, str, str]]:
    recording.number_events(owner.pk)  # As a reader does.
    return list(
        Event.objects.filter(owner=owner).order_by("seq").values_list("seq", "type", "status")
    )


def test_a_job_s_life_is_told_in_order(verified_user):
    job, _ = services.job_create(owner=verified_user, name="a", job_type="echo", parameters={})
    claimed = services.job_claim(job_id=job.pk, worker="w")
    services.job_complete(job=claimed, output={"ok": True}, duration_ms=1)

    assert _told(verified_user) == [
        (1, EventType.PENDING, Job.Status.PENDING),
        (2, EventType.STARTED, Job.Status.IN_PROGRESS),
        (3, EventType.COMPLETED, Job.Status.COMPLETED),
    ]
    completed = Event.objects.get(owner=verified_user, seq=3)
    assert (completed.job_id, completed.attempt, completed.progress) == (job.pk, 1, 100)
    assert EventStream.objects.get(owner=verified_user).last_seq == 3


def test_a_retry_is_told_as_pending_again_with_its_backoff(job_factory):
    job = job_factory(max_retries=2)
    claimed = services.job_claim(job_id=job.pk, worker="w")

    services.job_fail_attempt(job=claimed, exc=RuntimeError("boom"), trace="")

    retry = Event.objects.get(job=job, type=EventType.PENDING)
    assert (retry.status, retry.attempt, retry.waiting_for) == ("pending", 1, "retry_backoff")


def test_the_final_failure_and_a_cancel_are_told(job_factory):
    failing = job_factory(max_retries=0)
    claimed = services.job_claim(job_id=failing.pk, worker="w")
    services.job_fail_attempt(job=claimed, exc=RuntimeError("boom"), trace="")
    cancelled = job_factory(owner=failing.owner)
    services.job_cancel(job=cancelled)

    assert [event.type for event in Event.objects.filter(owner=failing.owner)] == [
        EventType.STARTED,
        EventType.FAILED,
        EventType.CANCELLED,
    ]


def test_a_scheduled_job_is_told_waiting_for_its_time(verified_user):
    later = timezone.now() + timedelta(hours=1)
    services.job_create(
        owner=verified_user, name="a", job_type="echo", parameters={}, scheduled_time=later
    )

    assert Event.objects.get(owner=verified_user).waiting_for == "scheduled_time"


def test_a_bulk_submission_numbers_its_jobs_in_order(verified_user):
    specs = [{"name": str(n), "job_type": "echo", "parameters": {}} for n in range(5)]
    jobs, _ = services.jobs_create_bulk(owner=verified_user, specs=specs)
    recording.number_events(verified_user.pk)

    events = Event.objects.filter(owner=verified_user).order_by("seq")
    assert [(event.seq, event.job_id) for event in events] == [
        (n + 1, job.pk) for n, job in enumerate(jobs)
    ]


def test_users_are_numbered_apart(user_factory):
    ada, bob = user_factory(), user_factory()
    for owner in (ada, bob, ada):
        services.job_create(owner=owner, name="a", job_type="echo", parameters={})

    assert [seq for seq, _, _ in _told(ada)] == [1, 2]
    assert [seq for seq, _, _ in _told(bob)] == [1]


def test_progress_is_told(job_factory):
    job = job_factory()
    claimed = services.job_claim(job_id=job.pk, worker="w")

    transitions.apply(transitions.PROGRESS, claimed, progress=40)

    progress = Event.objects.get(job=job, type=EventType.PROGRESS)
    assert progress.progress == 40


def test_a_change_that_is_rolled_back_is_neither_stored_nor_told(verified_user):
    class Abort(Exception):
        pass

    def create_then_fail() -> None:
        with transaction.atomic():
            services.job_create(owner=verified_user, name="a", job_type="echo", parameters={})
            raise Abort

    with pytest.raises(Abort):
        create_then_fail()

    assert not Event.objects.filter(owner=verified_user).exists()
    assert EventStream.objects.filter(owner=verified_user, last_seq__gt=0).count() == 0


def _open_stream(owner) -> None:
    """Count a stream of the owner's in Redis, as the events process does when one opens."""
    slots = UserSlots(settings.REDIS_URL, limit=10, keepalive_seconds=15)
    assert asyncio.run(slots.take(owner.pk)) is not None


def _announcements(pubsub, timeout: float) -> list[bytes]:
    """What the channel carries within `timeout` (None also stands for a subscribe reply)."""
    heard = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if (message := pubsub.get_message(timeout=left)) is not None:
            heard.append(message["data"])
    return heard


@pytest.fixture
def channel():
    pubsub = cache_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(recording.CHANNEL)
    yield pubsub
    pubsub.close()


@pytest.mark.django_db(transaction=True)
def test_events_are_announced_only_after_the_commit(verified_user, channel):
    _open_stream(verified_user)
    with transaction.atomic():
        services.job_create(owner=verified_user, name="a", job_type="echo", parameters={})
        assert channel.get_message(timeout=0.2) is None
    message = channel.get_message(timeout=2)

    assert message["data"] == str(verified_user.pk).encode()


def test_a_user_without_listeners_is_not_announced_to_for_a_while(verified_user, channel):
    # Nobody listens: Redis says so, and this process believes it for UNHEARD_SECONDS.
    recording.announce(verified_user.pk, EventType.PENDING)
    _open_stream(verified_user)
    recording.announce(verified_user.pk, EventType.STARTED)
    assert _announcements(channel, timeout=0.3) == []

    recording.forget_unheard()  # As when UNHEARD_SECONDS have passed.
    recording.announce(verified_user.pk, EventType.COMPLETED)
    assert _announcements(channel, timeout=2) == [str(verified_user.pk).encode()]


def test_a_user_with_a_stream_is_announced_to_every_time(verified_user, channel):
    _open_stream(verified_user)
    for event_type in (EventType.PENDING, EventType.STARTED, EventType.COMPLETED):
        recording.announce(verified_user.pk, event_type)

    assert _announcements(channel, timeout=1) == [str(verified_user.pk).encode()] * 3


@pytest.mark.django_db(transaction=True)
def test_readers_numbering_while_jobs_change_give_every_number_once(job_factory, user_factory):
    owner = user_factory()
    jobs = iter([job_factory(owner=owner) for _ in range(40)])
    lock = threading.Lock()

    def claim_and_read() -> None:
        while True:
            with lock:
                job = next(jobs, None)
            if job is None:
                return
            services.job_claim(job_id=job.pk, worker="w")
            recording.number_events(owner.pk)

    run_together(8, claim_and_read)

    numbered = Event.objects.filter(owner=owner).order_by("seq")
    assert list(numbered.values_list("seq", flat=True)) == list(range(1, 41))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="on SQLite a writer waits for the other's commit"
)
def test_an_event_that_commits_late_is_numbered_after_those_before_it(user_factory):
    from django.db import connections

    owner = user_factory()
    early, late = threading.Event(), threading.Event()

    def slow_submission() -> None:
        with transaction.atomic():
            services.job_create(owner=owner, name="slow", job_type="echo", parameters={})
            early.set()  # Its event has the smaller id, and is not committed yet.
            late.wait(10)
        connections.close_all()

    writer = threading.Thread(target=slow_submission)
    writer.start()
    early.wait(10)
    for name in "ab":
        services.job_create(owner=owner, name=name, job_type="echo", parameters={})
    recording.number_events(owner.pk)
    late.set()
    writer.join()
    recording.number_events(owner.pk)

    told = Event.objects.filter(owner=owner).order_by("seq").values_list("seq", "job__name")
    assert list(told) == [(1, "a"), (2, "b"), (3, "slow")]


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    explain = "EXPLAIN QUERY PLAN" if connection.vendor == "sqlite" else "EXPLAIN"
    with connection.cursor() as cursor:
        cursor.execute(f"{explain} {sql}", params)
        return "\n".join(str(row) for row in cursor.fetchall())


def test_a_stream_reads_through_the_numbered_events_index(verified_user):
    # The unique index holds numbered events only (storing an event costs it nothing); a
    # stream's "after n" still implies a number, so the read goes through it.
    for _ in range(3):
        services.job_create(owner=verified_user, name="a", job_type="echo", parameters={})
    recording.number_events(verified_user.pk)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # A few rows are read faster without an index; the question is whether it applies.
            cursor.execute("SET LOCAL enable_seqscan = off")
    read = Event.objects.filter(owner_id=verified_user.pk, seq__gt=1).order_by("seq")[:500]

    assert "event_unique_owner_seq" in _plan(read)
