"""Creating, changing and deleting a user's webhook endpoints (services)."""

from contextlib import suppress
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from events import recording
from events.models import TERMINAL_EVENT_TYPES, EventStream
from job_system.cache import cache_redis
from job_system.deletion import delete_locked
from jobs.models import Job
from webhooks.models import Endpoint, default_event_types
from webhooks.selectors import live_endpoints
from webhooks.signing import new_secret


class TooManyEndpoints(Exception):
    """The owner has as many endpoints as WEBHOOK_MAX_ENDPOINTS_PER_USER allows."""


def endpoint_create(
    *,
    owner,
    url: str,
    event_types: list[str] | None = None,
    description: str = "",
    enabled: bool = True,
) -> Endpoint:
    """Add an endpoint that receives the owner's events from now on; its secret is new.

    It hears the terminal events (job.completed, job.failed, job.cancelled) unless told which.
    """
    using = router.db_for_write(Endpoint)
    # What happened before has its numbers, at or below the endpoint's start.
    recording.number_events(owner.pk, using=using)
    with transaction.atomic(using=using):
        since = _hold_stream(owner.pk, using=using)
        standing = Endpoint.objects.filter(owner=owner, job=None)
        if standing.count() >= settings.WEBHOOK_MAX_ENDPOINTS_PER_USER:
            raise TooManyEndpoints(
                f"You have {settings.WEBHOOK_MAX_ENDPOINTS_PER_USER} endpoints, the most "
                "allowed; delete one first."
            )
        endpoint = Endpoint.objects.create(
            owner=owner,
            url=url,
            event_types=event_types or default_event_types(),
            description=description,
            enabled=enabled,
            secret=new_secret(),
            since_seq=since,
        )
    return endpoint


def callbacks_create(*, jobs: list[Job], urls: list[str]) -> list[Endpoint]:
    """One-off endpoints for the jobs' terminal events (their submission's callback_url).

    Called in the transaction that created the jobs, after them: their events are the
    stream's last ones, and each endpoint hears only its own job.
    """
    owner_id = jobs[0].owner_id
    _hold_stream(owner_id, using=router.db_for_write(Endpoint))
    callbacks = [
        Endpoint(
            owner_id=owner_id,
            job=job,
            url=url,
            event_types=[str(event_type) for event_type in TERMINAL_EVENT_TYPES],
            secret=new_secret(),
        )
        for job, url in zip(jobs, urls, strict=True)
        if url
    ]
    return Endpoint.objects.bulk_create(callbacks)


def _hold_stream(owner_id: int, *, using: str) -> int:
    """Lock the owner's event stream; return its last number, after which a new endpoint hears.

    If the owner had no live endpoint, the webhooks' place in the stream moves to now: nothing
    before concerns the new endpoint, and the fan-out need not read through it. Events not
    numbered yet (those of jobs created in this transaction among them) get later numbers.
    After the commit, the owner's events start fan-outs.
    """
    last = recording.take_numbers(owner_id, 0, using=using)
    if not has_live_endpoints(owner_id):
        streams = EventStream.objects.using(using).filter(owner_id=owner_id)
        streams.update(fanned_out_seq=last)
    transaction.on_commit(lambda: hook_owners([owner_id]), using=using)
    return last


def has_live_endpoints(owner_id: int) -> bool:
    """Whether the owner has an enabled endpoint, or a callback not yet told (selectors)."""
    return live_endpoints().filter(owner_id=owner_id).exists()


def endpoint_update(*, endpoint: Endpoint, **fields: Any) -> Endpoint:
    """Change an endpoint; enabling it again clears its failures and resumes its deliveries."""
    for name, value in fields.items():
        setattr(endpoint, name, value)
    if fields.get("enabled"):
        endpoint.failing_since = endpoint.retry_at = endpoint.disabled_at = None
        endpoint.consecutive_failures = 0
        endpoint.disabled_reason = ""
    endpoint.save()
    # The types it wants, or whether it wants any, may have changed.
    transaction.on_commit(lambda: hook_owners([endpoint.owner_id]))
    return endpoint


def endpoint_rotate_secret(*, endpoint: Endpoint) -> Endpoint:
    """Give the endpoint a new secret; the old one still signs for the grace period.

    A second rotation within the grace period drops the oldest secret: two at most.
    """
    now = timezone.now()
    grace = timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS)
    endpoint.previous_secret, endpoint.secret = endpoint.secret, new_secret()
    endpoint.previous_secret_expires_at = now + grace
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return endpoint


def endpoint_delete(*, endpoint: Endpoint) -> None:
    """Delete an endpoint with its deliveries and their log, safe against deliveries and
    attempts being added meanwhile (lock_live_endpoint)."""
    delete_locked(endpoint)


def lock_live_endpoint(endpoint_id) -> bool:
    """Lock the endpoint's row until the transaction ends; return whether it still exists.

    An attempt and a redelivery take it before they write under the endpoint, so that a
    delete (delete_locked) never runs between the two. A fan-out, which would hold every
    endpoint of the owner for its batch, makes the batch again instead.
    """
    endpoints = Endpoint.objects.select_for_update(no_key=True)
    return endpoints.filter(pk=endpoint_id).exists()


# Redis knows which owners have endpoints, so that announcing an event costs the others
# nothing (events.recording). It is a hint: Beat's sweep adds back what a wipe lost, and a
# fan-out that finds nothing to do takes its owner out.


def hook_owners(owner_ids: list[int]) -> None:
    """Have these owners' events of the types their live endpoints want start fan-outs."""
    wanted: dict[int, set[str]] = {}
    endpoints = live_endpoints().filter(owner_id__in=owner_ids)
    for owner_id, event_types in endpoints.values_list("owner_id", "event_types"):
        wanted.setdefault(owner_id, set()).update(event_types)
    if wanted:
        mapping = {owner: f",{','.join(sorted(types))}," for owner, types in wanted.items()}
        with suppress(redis.RedisError):  # The sweep adds them within seconds.
            cache_redis().hset(recording.HOOKED_OWNERS_KEY, mapping=mapping)


def unhook_owner(owner_id: int) -> None:
    with suppress(redis.RedisError):  # A fan-out that finds nothing costs little.
        cache_redis().hdel(recording.HOOKED_OWNERS_KEY, owner_id)
