"""Fan-out and delivery against a real HTTP receiver on loopback."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from events.models import Event
from webhooks import delivery, fanout
from webhooks.endpoints import endpoint_update
from webhooks.models import Delivery, DeliveryAttempt, Endpoint
from webhooks.redelivery import endpoint_redeliver
from webhooks.signing import verify

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loopback_allowed")]


def _deliver_all(owner_id: int) -> None:
    for endpoint_id in fanout.webhooks_fan_out(owner_id=owner_id):
        delivery.webhooks_deliver(endpoint_id=endpoint_id)


def test_a_finished_job_is_posted_signed_to_the_endpoint(
    verified_user, receiver, endpoint_for, finished_job
):
    endpoint = endpoint_for(receiver.url)
    job = finished_job()

    _deliver_all(verified_user.pk)

    [received] = receiver.received
    headers = received.headers
    assert verify(
        endpoint.secret,
        webhook_id=headers["webhook-id"],
        timestamp=int(headers["webhook-timestamp"]),
        body=received.body,
        header=headers["webhook-signature"],
    )
    payload = received.payload
    assert payload["type"] == "job.completed"
    assert payload["data"]["job"]["id"] == str(job.pk)
    assert payload["data"]["job"]["result_url"].endswith(f"/api/jobs/{job.pk}/result/")
    assert "output" not in received.body.decode()
    assert Delivery.objects.get().status == Delivery.Status.SUCCEEDED


def test_only_the_chosen_types_of_the_owner_s_own_events_are_sent(
    user_factory, verified_user, receiver, endpoint_for, finished_job
):
    endpoint_for(receiver.url, event_types=["job.started"])
    finished_job()
    finished_job(owner=user_factory())  # Someone else's.

    _deliver_all(verified_user.pk)

    assert [r.payload["type"] for r in receiver.received] == ["job.started"]


def test_an_endpoint_hears_nothing_from_before_it_was_added(
    verified_user, receiver, endpoint_for, finished_job
):
    finished_job()
    endpoint_for(receiver.url)
    finished_job()

    _deliver_all(verified_user.pk)

    assert len(receiver.received) == 1


def test_a_failed_delivery_is_retried_later_with_the_same_webhook_id(
    verified_user, receiver, endpoint_for, finished_job
):
    answers = iter([(500, b"oops"), (200, b"ok")])
    receiver.answer = lambda received: next(answers)
    endpoint_for(receiver.url)
    finished_job()

    _deliver_all(verified_user.pk)
    failed = Delivery.objects.get()
    assert (failed.status, failed.attempts) == (Delivery.Status.PENDING, 1)
    assert failed.next_attempt_at > timezone.now() + timedelta(seconds=4)
    with time_machine.travel(failed.next_attempt_at + timedelta(seconds=1)):
        delivery.webhooks_deliver(endpoint_id=failed.endpoint_id)

    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == failed.webhook_id
    assert Delivery.objects.get().status == Delivery.Status.SUCCEEDED
    log = list(DeliveryAttempt.objects.order_by("attempted_at"))
    assert [(a.status_code, a.succeeded, a.response_excerpt) for a in log] == [
        (500, False, "oops"),
        (200, True, "ok"),
    ]


def test_a_delivery_is_given_up_after_the_last_retry(
    verified_user, receiver, endpoint_for, finished_job
):
    receiver.answer = lambda received: (503, b"")
    endpoint_for(receiver.url)
    finished_job()
    _deliver_all(verified_user.pk)

    for _ in range(2):  # WEBHOOK_RETRY_SCHEDULE has two waits here.
        due = Delivery.objects.get().next_attempt_at
        with time_machine.travel(due + timedelta(seconds=1)):
            delivery.webhooks_deliver(endpoint_id=Delivery.objects.get().endpoint_id)

    given_up = Delivery.objects.get()
    assert (given_up.status, given_up.attempts, given_up.next_attempt_at) == ("failed", 3, None)
    assert len(receiver.received) == 3


def test_a_redirect_is_a_failure_and_is_not_followed(
    verified_user, receiver, endpoint_for, finished_job
):
    receiver.answer = lambda received: (302, b"")
    endpoint_for(receiver.url)
    finished_job()

    _deliver_all(verified_user.pk)

    attempt = DeliveryAttempt.objects.get()
    assert (attempt.status_code, attempt.succeeded) == (302, False)
    assert "redirect" in attempt.error


def test_an_endpoint_that_keeps_failing_waits_then_is_disabled_after_a_day(
    verified_user, receiver, endpoint_for, finished_job
):
    receiver.answer = lambda received: (500, b"")
    endpoint = endpoint_for(receiver.url)
    for _ in range(delivery.CIRCUIT_FAILURES):
        finished_job()
    _deliver_all(verified_user.pk)

    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == delivery.CIRCUIT_FAILURES
    assert endpoint.retry_at is not None
    # None of its deliveries is due before the endpoint may be tried again.
    assert not Delivery.objects.filter(next_attempt_at__lt=endpoint.retry_at).exists()

    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        delivery.webhooks_deliver(endpoint_id=endpoint.pk)
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert "failed for a day" in endpoint.disabled_reason
    assert not Delivery.objects.filter(next_attempt_at__isnull=False, status="pending").exists()

    receiver.answer = lambda received: (200, b"")
    endpoint_update(endpoint=endpoint, enabled=True)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.consecutive_failures) == (
        True,
        "",
        0,
    )


def test_a_refused_address_is_recorded_as_a_failed_attempt(
    verified_user, endpoint_for, finished_job, settings
):
    endpoint_for("http://127.0.0.1:9/hook")
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    finished_job()

    _deliver_all(verified_user.pk)

    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None
    assert attempt.error


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(
    verified_user, receiver, endpoint_for, finished_job
):
    from webhooks.endpoints import endpoint_rotate_secret

    endpoint = endpoint_for(receiver.url)
    old = endpoint.secret
    endpoint_rotate_secret(endpoint=endpoint)
    finished_job()

    _deliver_all(verified_user.pk)

    [received] = receiver.received
    signature = received.headers["webhook-signature"]
    for secret in (old, endpoint.secret):
        assert verify(
            secret,
            webhook_id=received.headers["webhook-id"],
            timestamp=int(received.headers["webhook-timestamp"]),
            body=received.body,
            header=signature,
        )
    assert endpoint.previous_secret_expires_at > timezone.now() + timedelta(hours=23)


def test_a_redelivery_sends_the_event_again_with_its_webhook_id(
    verified_user, receiver, endpoint_for, finished_job
):
    endpoint = endpoint_for(receiver.url)
    finished_job()
    _deliver_all(verified_user.pk)
    event = Event.objects.get(owner=verified_user, type="job.completed")

    queued, truncated = endpoint_redeliver(endpoint=endpoint, event_seq=event.seq)
    delivery.webhooks_deliver(endpoint_id=endpoint.pk)

    assert (queued, truncated) == (1, False)
    first, again = receiver.received
    assert first.headers["webhook-id"] == again.headers["webhook-id"]


def test_a_redelivery_since_a_time_sends_events_the_endpoint_never_had(
    verified_user, receiver, endpoint_for, finished_job
):
    before = timezone.now()
    finished_job()
    endpoint = endpoint_for(receiver.url)

    queued, _ = endpoint_redeliver(endpoint=endpoint, since=before)
    delivery.webhooks_deliver(endpoint_id=endpoint.pk)

    assert queued == 1
    assert [r.payload["type"] for r in receiver.received] == ["job.completed"]


def test_a_job_s_callback_hears_its_terminal_event_only(verified_user, receiver):
    from jobs import services

    job, _ = services.job_create(
        owner=verified_user, name="a", job_type="echo", parameters={}, callback_url=receiver.url
    )
    other, _ = services.job_create(owner=verified_user, name="b", job_type="echo", parameters={})
    for each in (job, other):
        claimed = services.job_claim(job_id=each.pk, worker="w")
        services.job_complete(job=claimed, output={}, duration_ms=1)

    _deliver_all(verified_user.pk)

    [received] = receiver.received
    assert received.payload["type"] == "job.completed"
    assert received.payload["data"]["job"]["id"] == str(job.pk)
    callback = Endpoint.objects.get(job=job)
    assert verify(
        callback.secret,
        webhook_id=received.headers["webhook-id"],
        timestamp=int(received.headers["webhook-timestamp"]),
        body=received.body,
        header=received.headers["webhook-signature"],
    )


@pytest.mark.django_db(transaction=True)
def test_one_worker_at_a_time_delivers_to_an_endpoint(
    verified_user, receiver, endpoint_for, finished_job
):
    from jobs.tests.concurrency import run_together

    endpoint = endpoint_for(receiver.url)
    for _ in range(5):
        finished_job()
    fanout.webhooks_fan_out(owner_id=verified_user.pk)

    run_together(4, lambda: delivery.webhooks_deliver(endpoint_id=endpoint.pk))

    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 5
