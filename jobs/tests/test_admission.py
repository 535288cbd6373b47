"""Admission: waiting jobs get messages in fair order across users, within the limits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from job_system.heartbeats import heartbeat_redis, worker_beat, worker_gone
from jobs import handlers, services
from jobs.models import Job
from jobs.services import admission

JOBS = "/api/jobs/"


@pytest.fixture(autouse=True)
def window_of_one(settings):
    """One message for each worker process beyond the one it runs: small numbers to follow."""
    settings.JOB_QUEUE_WINDOW = 1


@pytest.fixture
def waiting(job_factory):
    """Make `count` jobs of `owner` that wait for admission (sleep jobs: one message each)."""

    def make(owner, count: int = 1, **fields) -> list[Job]:
        fields.setdefault("job_type", "sleep")
        fields.setdefault("parameters", {"seconds": 0})
        return job_factory.create_batch(count, owner=owner, enqueued_at=None, **fields)

    return make


def admitted() -> list[Job]:
    """The admitted jobs not yet claimed, in the order admission chose them."""
    return list(
        Job.objects.filter(status=Job.Status.PENDING, enqueued_at__isnull=False).order_by(
            "enqueued_at", "updated_at"
        )
    )


def run_admitted() -> list[Job]:
    """Claim and complete every admitted job, as workers would; return them."""
    jobs = admitted()
    for job in jobs:
        claimed = services.job_claim(job_id=job.pk, worker="w@host")
        services.job_complete(job=claimed, output={}, duration_ms=1)
    return jobs


def owners_in_turn(rounds: int) -> list[int]:
    """Admit and run the queue's window `rounds` times; the owners of the jobs, in order."""
    order = []
    for _ in range(rounds):
        services.jobs_admit(queues=["long"])
        order += [job.owner_id for job in run_admitted()]
    return order


def test_users_take_turns_instead_of_first_come_first_served(user_factory, waiting):
    early, late = user_factory(), user_factory()
    waiting(early, 6)
    waiting(late, 2)

    # One process (no worker beats here) and a window of one more message: two at a time.
    order = owners_in_turn(4)

    assert order[:4].count(late.pk) == 2  # Not behind the early user's six.
    assert order[4:] == [early.pk] * 4


def test_a_heavier_user_gets_that_many_more_turns(user_factory, waiting):
    heavy, light = user_factory(fair_share_weight=3), user_factory()
    waiting(heavy, 40)
    waiting(light, 40)

    order = owners_in_turn(20)

    assert order.count(heavy.pk) == 30
    assert order.count(light.pk) == 10


def test_a_user_back_from_idle_saved_no_credit(user_factory, waiting):
    busy, returning = user_factory(), user_factory()
    waiting(busy, 20)
    owners_in_turn(5)  # The busy user alone, ten turns.
    waiting(returning, 10)

    order = owners_in_turn(2)

    assert (
        order == [busy.pk, returning.pk, busy.pk, returning.pk] or order.count(returning.pk) == 2
    )  # Alternating, not ten turns in a row to catch up.


def test_priority_orders_a_users_own_jobs_but_not_other_users(user_factory, waiting):
    user, other = user_factory(), user_factory()
    [low] = waiting(user, priority=1)
    [high] = waiting(user, priority=9)
    [others] = waiting(other, priority=0)

    services.jobs_admit(queues=["long"])

    assert {job.pk for job in admitted()} == {high.pk, others.pk}
    run_admitted()
    services.jobs_admit(queues=["long"])
    assert [job.pk for job in admitted()] == [low.pk]


def test_a_user_at_the_limit_waits_without_a_message_or_an_attempt(
    user_factory, waiting, settings, auth_client, verified_user
):
    settings.JOB_USER_CONCURRENCY = 1
    settings.JOB_QUEUE_WINDOW = 5
    first, second = waiting(verified_user, 2)

    services.jobs_admit()
    assert [job.pk for job in admitted()] == [first.pk]
    services.job_claim(job_id=first.pk, worker="w@host")
    services.jobs_admit()

    second.refresh_from_db()
    assert second.enqueued_at is None
    assert second.attempts == 0
    detail = auth_client.get(f"{JOBS}{second.pk}/").json()
    assert detail["waiting_for"] == "user_concurrency_limit"
    assert auth_client.get(f"{JOBS}{first.pk}/").json()["waiting_for"] is None


def test_a_job_that_ends_makes_room_for_the_next_of_its_user(user_factory, waiting, settings):
    settings.JOB_USER_CONCURRENCY = 1
    settings.JOB_QUEUE_WINDOW = 5
    user = user_factory()
    waiting(user, 3)

    for expected in (1, 1, 1, 0):
        services.jobs_admit()
        assert len(run_admitted()) == expected


def test_staff_can_give_one_user_another_limit(user_factory, waiting, settings):
    settings.JOB_USER_CONCURRENCY = 1
    settings.JOB_QUEUE_WINDOW = 20
    trusted, unlimited = user_factory(max_running_jobs=3), user_factory(max_running_jobs=0)
    waiting(trusted, 5)
    waiting(unlimited, 5)

    services.jobs_admit()

    counts = [job.owner_id for job in admitted()]
    assert counts.count(trusted.pk) == 3
    assert counts.count(unlimited.pk) == 5


def test_a_type_limit_holds_across_users(user_factory, waiting, auth_client, verified_user):
    for owner in (user_factory(), user_factory(), verified_user):
        waiting(owner, 2, job_type="primes", parameters={"limit": 10})
    services.jobs_admit()  # primes' limit is 2, whatever the window.

    assert len(admitted()) == 2
    left = Job.objects.filter(owner=verified_user, enqueued_at=None).first()
    assert left is not None
    assert auth_client.get(f"{JOBS}{left.pk}/").json()["waiting_for"] == "type_concurrency_limit"


def test_the_window_is_sized_by_the_workers_heartbeats(user_factory, waiting):
    user = user_factory()
    waiting(user, 20)
    worker_beat(hostname="long@host", queues=["long", "cpu"], processes=3)
    try:
        services.jobs_admit(queues=["long"])
    finally:
        worker_gone(hostname="long@host")

    assert len(admitted()) == 6  # One message for each process, and one more each.


def test_quick_jobs_fill_the_window_a_message_of_jobs_at_a_time(user_factory, waiting, settings):
    settings.JOB_MESSAGE_BATCH_SIZE = 5
    user = user_factory()
    waiting(user, 30, job_type="echo", parameters={"message": "hi"})

    services.jobs_admit(queues=["default"])

    assert len(admitted()) == 10  # Two messages of five.


def test_an_idle_system_admits_a_submission_at_once(auth_client):
    response = auth_client.post(JOBS, {"name": "now", "job_type": "echo"}, format="json")

    job = Job.objects.get(pk=response.json()["id"])
    assert job.enqueued_at is not None
    assert response.json()["waiting_for"] == "worker"


def test_a_submission_waits_its_turn_while_others_wait(
    auth_client, user_factory, waiting, django_capture_on_commit_callbacks
):
    waiting(user_factory(), 5)
    services.jobs_admit(queues=["long"])  # Fills the window; the rest wait, flagged.
    body = {"name": "mine", "job_type": "sleep", "parameters": {"seconds": 0}}

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(JOBS, body, format="json")

    job = Job.objects.get(pk=response.json()["id"])
    assert job.enqueued_at is None  # No room: it waits in the database for its turn...
    run_admitted()
    services.jobs_admit(queues=["long"])
    job.refresh_from_db()
    assert job.enqueued_at is not None  # ...which comes before the other user's backlog.


def test_a_limited_user_never_skips_admission(auth_client, verified_user, settings):
    verified_user.max_running_jobs = 5
    verified_user.save()

    response = auth_client.post(JOBS, {"name": "x"}, format="json")

    assert Job.objects.get(pk=response.json()["id"]).enqueued_at is None
    services.jobs_admit()
    assert Job.objects.get(pk=response.json()["id"]).enqueued_at is not None


def test_a_worker_refills_a_queue_only_when_jobs_wait_and_it_runs_low(user_factory, waiting):
    assert services.jobs_admit_if_waiting() == 0  # Nothing flagged: one Redis round trip.
    waiting(user_factory(), 5)
    services.jobs_admit(queues=["long"])
    run_admitted()
    heartbeat_redis().delete("long")  # The worker took the messages.

    assert services.jobs_admit_if_waiting() == 2


def test_waiting_for_says_scheduled_time_or_retry_backoff(auth_client, verified_user, job_factory):
    later = timezone.now() + timedelta(hours=1)
    scheduled = job_factory(owner=verified_user, run_after=later, enqueued_at=None)
    backing_off = job_factory(
        owner=verified_user, run_after=later, run_attempts=1, enqueued_at=None
    )

    assert auth_client.get(f"{JOBS}{scheduled.pk}/").json()["waiting_for"] == "scheduled_time"
    assert auth_client.get(f"{JOBS}{backing_off.pk}/").json()["waiting_for"] == "retry_backoff"


def test_a_list_says_why_each_job_waits_in_one_more_query(
    auth_client, verified_user, waiting, settings, django_assert_max_num_queries
):
    settings.JOB_USER_CONCURRENCY = 1
    waiting(verified_user, 10)
    services.jobs_admit()

    with django_assert_max_num_queries(6):
        jobs = auth_client.get(JOBS).json()["results"]

    assert sorted(job["waiting_for"] for job in jobs) == ["user_concurrency_limit"] * 9 + ["worker"]


def test_priority_is_validated(auth_client):
    response = auth_client.post(JOBS, {"name": "x", "priority": 10}, format="json")

    assert response.status_code == 400
    assert "priority" in response.json()


def test_admission_counts_only_the_small_sets_of_running_and_admitted_jobs(
    user_factory, waiting, django_assert_max_num_queries
):
    user = user_factory()
    waiting(user, 300)
    others = [user_factory() for _ in range(5)]
    for other in others:
        waiting(other, 1)

    # The lock, owners, counts, clock, shares, users, one fetch per owner admitted, the
    # marking (three) and the saving (two), whatever the backlog.
    with django_assert_max_num_queries(12 + len(others) + 1):
        services.jobs_admit(queues=["long"])


@pytest.mark.parametrize("queue_name", admission.queue_names())
def test_every_queue_is_admitted_by_the_dispatcher(queue_name, user_factory, job_factory):
    handler = next(h for h in handlers.all_handlers() if h.queue == queue_name)
    job = job_factory(owner=user_factory(), job_type=handler.name, enqueued_at=None)

    services.jobs_dispatch_due()

    job.refresh_from_db()
    assert job.enqueued_at is not None


def test_only_one_worker_at_a_time_refills_a_queue(user_factory, waiting):
    waiting(user_factory(), 5)
    services.jobs_admit(queues=["long"])
    run_admitted()
    heartbeat_redis().delete("long")
    heartbeat_redis().set("jobsys:admitting:long", 1)  # Another worker admits right now.

    assert services.jobs_admit_if_waiting() == 0  # It goes on to its next message instead.
    heartbeat_redis().delete("jobsys:admitting:long")
    assert services.jobs_admit_if_waiting() == 2
    assert not heartbeat_redis().exists("jobsys:admitting:long")  # Free for the next one.
