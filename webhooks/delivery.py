"""Sending deliveries: one worker at a time per endpoint, with retries and a circuit breaker.

An endpoint's deliveries are sent in order by one worker thread, which claims the endpoint
with a conditional UPDATE; so a slow or dead receiver holds one thread, never the others'.
A failed delivery is tried again after WEBHOOK_RETRY_SCHEDULE's waits, with the same
webhook-id, and given up after the last. After CIRCUIT_FAILURES failures in a row the
endpoint itself waits (one delivery is tried when the wait is over), and after a day of
nothing but failures it is disabled, which its owner sees.
"""

import json
import logging
from contextlib import suppress
from datetime import datetime, timedelta
from time import monotonic

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from events.payloads import event_payload
from job_system.cache import cache_redis
from webhooks import transport
from webhooks.endpoints import lock_live_endpoint
from webhooks.models import Delivery, DeliveryAttempt, Endpoint
from webhooks.signing import signature_header

logger = logging.getLogger(__name__)

DELIVER_TASK = "webhooks.tasks.webhooks_deliver"
# Set while a delivery task for the endpoint is on its way, so that a burst of events sends one.
KICK_KEY = "jobsys:webhook-kick:{endpoint}"
KICK_PENDING_MS = 60_000
# Failures in a row after which the endpoint waits before its next attempt.
CIRCUIT_FAILURES = 5
# A worker gives up its endpoint after this long, and sends a task to go on, so that a long
# backlog takes turns with the other endpoints.
TURN_SECONDS = 30.0
# Due deliveries read at once, in order; each is recorded as it is sent.
DUE_BATCH = 20
RESPONSE_EXCERPT_BYTES = 1024
MAX_RESPONSE_BYTES = 64 * 1024


def kick(endpoint_ids) -> None:
    """Have a worker deliver each endpoint's due deliveries, unless one is on its way."""
    from job_system.celery import app

    client = cache_redis()
    for endpoint_id in endpoint_ids:
        try:
            if not client.set(
                KICK_KEY.format(endpoint=endpoint_id), 1, nx=True, px=KICK_PENDING_MS
            ):
                continue
            app.send_task(DELIVER_TASK, args=[str(endpoint_id)], queue="webhooks")
        except Exception as error:
            logger.warning("could not send the deliveries of endpoint %s: %s", endpoint_id, error)


def webhooks_deliver(*, endpoint_id) -> None:
    """Send the endpoint's due deliveries, in order, while this worker holds the endpoint."""
    with suppress(redis.RedisError):  # The flag expires.
        cache_redis().delete(KICK_KEY.format(endpoint=endpoint_id))
    while _claim(endpoint_id):
        try:
            more = _deliver_due(endpoint_id)
        finally:
            Endpoint.objects.filter(pk=endpoint_id).update(claimed_until=None)
        if more:
            kick([endpoint_id])  # Its turn is over: the others go first.
            return
        # A delivery made while this worker held the endpoint found it claimed: look again.
        if not _due(endpoint_id, timezone.now()).exists():
            return


def _available(now: datetime) -> Q:
    """Endpoints that a worker may take now: enabled, not held, and not waiting."""
    return (
        Q(enabled=True)
        & (Q(claimed_until=None) | Q(claimed_until__lt=now))
        & (Q(retry_at=None) | Q(retry_at__lte=now))
    )


def _claim(endpoint_id) -> bool:
    now = timezone.now()
    hold = timedelta(seconds=TURN_SECONDS + settings.WEBHOOK_TIMEOUT_SECONDS + 30)
    claimed = Endpoint.objects.filter(_available(now), pk=endpoint_id)
    return bool(claimed.update(claimed_until=now + hold))


def _due(endpoint_id, now: datetime):
    return Delivery.objects.filter(
        endpoint_id=endpoint_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now
    ).order_by("next_attempt_at", "id")


def _deliver_due(endpoint_id) -> bool:
    """Send due deliveries until none is left, one fails, or the turn is over (then True)."""
    started = monotonic()
    while monotonic() - started < TURN_SECONDS:
        endpoint = Endpoint.objects.get(pk=endpoint_id)
        batch = list(_due(endpoint_id, timezone.now()).select_related("event")[:DUE_BATCH])
        if not batch:
            return False
        for delivery in batch:
            delivery.endpoint = endpoint
            if not attempt(delivery):
                return False
            if monotonic() - started >= TURN_SECONDS:
                return True
    return True


def attempt(delivery: Delivery) -> bool:
    """Send one delivery once, record the attempt and its outcome; return whether it took."""
    endpoint, now = delivery.endpoint, timezone.now()
    body = json.dumps(event_payload(delivery.event), separators=(",", ":")).encode()
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            endpoint.signing_secrets(now=now),
            webhook_id=delivery.webhook_id,
            timestamp=timestamp,
            body=body,
        ),
    }
    status_code, excerpt, error, started = None, "", "", monotonic()
    try:
        response = transport.post(
            endpoint.url,
            body=body,
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            max_response_bytes=MAX_RESPONSE_BYTES,
        )
    except (transport.Refused, transport.TransportError) as exc:
        error = exc.reason[:200]
    else:
        status_code = response.status
        excerpt = response.body[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace")
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}" + (
                " (redirects are not followed)" if 300 <= status_code < 400 else ""
            )
    latency_ms = int((monotonic() - started) * 1000)
    succeeded = not error
    with transaction.atomic():  # One commit for the attempt and what it changed.
        if not lock_live_endpoint(endpoint.pk):
            return False  # Deleted as it was sent: nothing is left to record it in.
        DeliveryAttempt.objects.create(
            delivery=delivery,
            endpoint=endpoint,
            attempted_at=now,
            status_code=status_code,
            latency_ms=latency_ms,
            response_excerpt=excerpt,
            error=error,
            succeeded=succeeded,
        )
        _record_outcome(delivery, succeeded=succeeded, error=error, now=now)
    return succeeded


def _record_outcome(delivery: Delivery, *, succeeded: bool, error: str, now: datetime) -> None:
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    attempts = delivery.attempts + 1
    if succeeded:
        status, next_attempt_at = Delivery.Status.SUCCEEDED, None
    elif attempts > len(schedule):
        status, next_attempt_at = Delivery.Status.FAILED, None
    else:
        status = Delivery.Status.PENDING
        next_attempt_at = now + timedelta(seconds=schedule[attempts - 1])
    # Fenced by the attempt count it read: a worker whose claim lapsed records nothing twice.
    Delivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
        status=status, attempts=attempts, next_attempt_at=next_attempt_at, last_attempt_at=now
    )
    endpoints = Endpoint.objects.filter(pk=delivery.endpoint_id)
    endpoint = delivery.endpoint
    if succeeded:
        if endpoint.consecutive_failures or endpoint.failing_since:
            endpoints.update(consecutive_failures=0, failing_since=None, retry_at=None)
            endpoint.consecutive_failures, endpoint.failing_since = 0, None
        return
    failures = endpoint.consecutive_failures + 1
    failing_since = endpoint.failing_since or now
    retry_at = None
    if failures >= CIRCUIT_FAILURES:
        step = min(failures - CIRCUIT_FAILURES, len(schedule) - 1)
        retry_at = now + timedelta(seconds=schedule[step])
    endpoints.update(
        consecutive_failures=F("consecutive_failures") + 1,
        failing_since=failing_since,
        retry_at=retry_at,
    )
    waiting = Delivery.objects.filter(
        endpoint_id=delivery.endpoint_id, status=Delivery.Status.PENDING
    )
    if now - failing_since >= timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS):
        reason = f"Every delivery failed for a day; the last: {error}"[:200]
        endpoints.filter(enabled=True).update(
            enabled=False, disabled_at=now, disabled_reason=reason
        )
        # Kept, undated, out of the due index: enabling the endpoint again sends them.
        waiting.update(next_attempt_at=None)
        logger.warning("webhook endpoint %s disabled: %s", delivery.endpoint_id, reason)
    elif retry_at is not None:
        # None of them is due before the endpoint is: the due index holds only sendable ones.
        waiting.filter(next_attempt_at__lt=retry_at).update(next_attempt_at=retry_at)
