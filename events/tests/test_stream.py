"""GET /api/events/ from the real events process (uvicorn), over HTTP, on the test database."""

import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from events import recording
from events.models import Event, EventStream
from events.tests.live import EventsProcess, open_stream, token_for
from jobs import services
from jobs.models import Job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

KEEPALIVE_SECONDS = 1
STREAMS_PER_USER = 3


@pytest.fixture(scope="module")
def events_url(django_db_setup, tmp_path_factory):
    process = EventsProcess(
        tmp_path_factory.mktemp("events"),
        EVENT_STREAM_KEEPALIVE_SECONDS=str(KEEPALIVE_SECONDS),
        EVENT_STREAMS_PER_USER=str(STREAMS_PER_USER),
    )
    yield process.url
    process.stop()


def later_job(owner) -> Job:
    """A pending job due in an hour: no worker touches it, so its events are only ours."""
    job, _ = services.job_create(
        owner=owner,
        name="later",
        job_type="echo",
        parameters={"message": "hi"},
        scheduled_time=timezone.now() + timedelta(hours=1),
    )
    return job


def ids(frames) -> list[int]:
    return [frame.id for frame in frames]


def test_a_stream_needs_a_token(events_url):
    response = httpx.get(f"{events_url}/api/events/")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_unconfirmed_address_may_not_stream(events_url, unverified_user):
    response = httpx.get(
        f"{events_url}/api/events/",
        headers={"Authorization": f"Bearer {token_for(unverified_user)}"},
    )

    assert response.status_code == 403
    assert response.json()["code"] == "email_not_verified"


def test_the_events_process_serves_nothing_else(events_url, verified_user):
    headers = {"Authorization": f"Bearer {token_for(verified_user)}"}

    assert httpx.get(f"{events_url}/api/jobs/", headers=headers).status_code == 404
    assert httpx.post(f"{events_url}/api/events/", headers=headers).status_code == 405


def test_a_stream_carries_the_callers_events_and_no_one_elses(
    events_url, user_factory, verified_user
):
    other = user_factory()
    later_job(other)
    mine = later_job(verified_user)
    later_job(other)

    with open_stream(events_url, token_for(verified_user)) as stream:
        [event] = stream.events(1)
        later_job(other)
        services.job_cancel(job=mine)
        [cancelled] = stream.events(1)

    assert (event.id, event.event) == (1, "job.pending")
    assert event.data["data"]["job"]["id"] == str(mine.pk)
    assert event.data["id"] == 1
    assert (cancelled.id, cancelled.event) == (2, "job.cancelled")
    assert cancelled.data["data"]["job"]["status"] == "cancelled"


def test_a_stream_for_one_job_carries_only_its_events(events_url, verified_user):
    first, second = later_job(verified_user), later_job(verified_user)
    services.job_cancel(job=first)
    services.job_cancel(job=second)

    with open_stream(events_url, token_for(verified_user), f"/api/events/?job={second.pk}") as s:
        events = s.events(2)

    assert [(event.id, event.event) for event in events] == [
        (2, "job.pending"),
        (4, "job.cancelled"),
    ]


def test_a_stream_for_another_users_job_is_not_found(events_url, verified_user, user_factory):
    theirs = later_job(user_factory())
    headers = {"Authorization": f"Bearer {token_for(verified_user)}"}

    response = httpx.get(f"{events_url}/api/events/?job={theirs.pk}", headers=headers)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "headers", "errors"),
    [
        ("?job=42", {}, {"job": ["Must be a valid UUID."]}),
        ("?after=-1", {}, {"after": ["Ensure this value is greater than or equal to 0."]}),
        ("?after=soon", {}, {"after": ["A valid integer is required."]}),
        ("", {"Last-Event-ID": "abc"}, {"Last-Event-ID": ["A valid integer is required."]}),
        (
            f"?after={2**63}",
            {},
            {"after": [f"Ensure this value is less than or equal to {2**63 - 1}."]},
        ),
    ],
)
def test_bad_positions_and_jobs_get_400_by_field(events_url, verified_user, query, headers, errors):
    headers = {**headers, "Authorization": f"Bearer {token_for(verified_user)}"}

    response = httpx.get(f"{events_url}/api/events/{query}", headers=headers)

    assert response.status_code == 400
    assert response.json() == errors


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"Last-Event-ID": "2"}, "", [3, 4, 5]),
        ({}, "?after=3", [4, 5]),
        # A browser reconnects with its first URL, and the header says where it got to.
        ({"Last-Event-ID": "4"}, "?after=1", [5]),
    ],
)
def test_resuming_gives_exactly_the_missed_events(
    events_url, verified_user, headers, query, expected
):
    jobs = [later_job(verified_user) for _ in range(3)]
    services.job_cancel(job=jobs[0])
    services.job_cancel(job=jobs[1])

    with open_stream(events_url, token_for(verified_user), f"/api/events/{query}", headers) as s:
        events = s.events(len(expected))
        later_job(verified_user)
        [next_one] = s.events(1)

    assert ids(events) == expected
    assert next_one.id == 6


def test_a_position_older_than_the_retained_events_gets_a_reset_first(events_url, verified_user):
    for _ in range(5):
        later_job(verified_user)
    # What retention does: number the events, delete the oldest and say how far.
    recording.number_events(verified_user.pk)
    Event.objects.filter(owner=verified_user, seq__lte=3).delete()
    EventStream.objects.filter(owner=verified_user).update(pruned_through=3)

    with open_stream(events_url, token_for(verified_user), headers={"Last-Event-ID": "1"}) as s:
        reset, *events = s.events(3)

    assert (reset.event, reset.id) == ("stream.reset", 3)
    assert reset.data == {"reason": "events_expired", "last_event_id": 1, "resumes_after": 3}
    assert ids(events) == [4, 5]


def test_a_position_beyond_the_last_event_gets_a_reset_and_the_next_events(
    events_url, verified_user
):
    later_job(verified_user)

    with open_stream(events_url, token_for(verified_user), headers={"Last-Event-ID": "9"}) as s:
        [reset] = s.events(1)
        later_job(verified_user)
        [event] = s.events(1)

    assert (reset.event, reset.id) == ("stream.reset", 1)
    assert reset.data["reason"] == "unknown_event_id"
    assert event.id == 2


def test_keepalive_comments_come_while_nothing_happens(events_url, verified_user):
    with open_stream(events_url, token_for(verified_user)) as stream:
        started = time.monotonic()
        stream.until(lambda frame: frame.is_keepalive, timeout=KEEPALIVE_SECONDS + 1)
        stream.until(lambda frame: frame.is_keepalive, timeout=KEEPALIVE_SECONDS + 1)
        elapsed = time.monotonic() - started

    assert KEEPALIVE_SECONDS * 1.5 < elapsed < KEEPALIVE_SECONDS * 3


def test_a_stream_ends_when_its_token_expires(events_url, verified_user):
    token = token_for(verified_user, lifetime=timedelta(seconds=2))

    with open_stream(events_url, token) as stream:
        end = stream.until(lambda frame: frame.event == "stream.end", timeout=4)
        after_end = stream.next_frame(time.monotonic() + 3)

    assert end.data == {"reason": "token_expired"}
    assert after_end is None  # The server closed the stream.


def test_an_expired_token_cannot_open_a_stream(events_url, verified_user):
    token = token_for(verified_user, lifetime=timedelta(seconds=-1))

    response = httpx.get(f"{events_url}/api/events/", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_a_user_may_hold_only_so_many_streams(events_url, verified_user):
    token = token_for(verified_user)
    with open_stream(events_url, token), open_stream(events_url, token):
        with open_stream(events_url, token) as third:
            third.until(lambda frame: frame.is_keepalive)  # Open and counted.
            refused = httpx.get(
                f"{events_url}/api/events/", headers={"Authorization": f"Bearer {token}"}
            )
        # The third one closed: its place is free again.
        with open_stream(events_url, token) as again:
            assert again.response.status_code == 200

    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_streams"


def test_a_state_change_arrives_within_a_second(events_url, verified_user):
    job = later_job(verified_user)
    with open_stream(events_url, token_for(verified_user), headers={"Last-Event-ID": "1"}) as s:
        s.until(lambda frame: frame.is_keepalive)  # The stream is waiting.
        cancelled_at = time.monotonic()
        services.job_cancel(job=job)
        [event] = s.events(1, timeout=1)
        waited = time.monotonic() - cancelled_at

    assert (event.id, event.event) == (2, "job.cancelled")
    # Well before the next keep-alive, which would read the table anyway: the announcement did.
    assert waited < KEEPALIVE_SECONDS / 2


def test_an_event_whose_announcement_was_lost_comes_at_the_next_keepalive(
    events_url, verified_user, monkeypatch
):
    monkeypatch.setattr(recording, "announce", lambda *told: None)  # Redis lost it.
    with open_stream(events_url, token_for(verified_user)) as stream:
        stream.until(lambda frame: frame.is_keepalive)
        time.sleep(KEEPALIVE_SECONDS / 3)  # Past the read that follows the keep-alive.
        later_job(verified_user)
        keepalive = stream.until(lambda frame: frame.is_keepalive or frame.id is not None)
        [event] = stream.events(1, timeout=1)

    assert keepalive.is_keepalive  # Nothing woke the stream before its keep-alive...
    assert event.id == 1  # ...which read the table again.


def test_a_new_stream_reads_often_while_its_user_may_be_believed_unheard(
    django_db_setup, tmp_path, verified_user, monkeypatch
):
    # Processes that heard "nobody listens to this user" just before the stream opened
    # announce nothing to it for up to UNHEARD_SECONDS: as if every announcement were lost.
    monkeypatch.setattr(recording, "announce", lambda *told: None)
    events = EventsProcess(tmp_path, EVENT_STREAM_KEEPALIVE_SECONDS="60")
    try:
        with open_stream(events.url, token_for(verified_user)) as stream:
            opened = time.monotonic()
            later_job(verified_user)
            created = time.monotonic() - opened
            [event] = stream.events(1, timeout=5)
            waited = time.monotonic() - opened
    finally:
        events.stop()

    assert created < recording.UNHEARD_SECONDS / 2, "too slow to test the first second"
    assert event.id == 1
    assert waited < recording.UNHEARD_SECONDS  # Not the keep-alive's read, a minute away.


def test_a_full_events_process_answers_503_with_retry_after(
    django_db_setup, tmp_path, verified_user
):
    process = EventsProcess(
        tmp_path, EVENT_STREAMS_PER_PROCESS="1", EVENT_STREAM_KEEPALIVE_SECONDS="1"
    )
    try:
        with open_stream(process.url, token_for(verified_user)) as stream:
            stream.until(lambda frame: frame.is_keepalive)
            refused = httpx.get(f"{process.url}/api/events/")
    finally:
        process.stop()

    assert refused.status_code == 503
    assert refused.json()["code"] == "streams_full"
    assert int(refused.headers["retry-after"]) > 0
