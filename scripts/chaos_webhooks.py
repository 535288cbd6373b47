"""The webhook half of `make chaos`: a receiver that fails 30% of requests, and its count.

The promise under test: every job's terminal state reaches the owner's endpoint at least
once, each event always under one `webhook-id`, whatever happens to workers and the broker,
and however often the receiver fails. The chaos user makes an endpoint for its terminal events
before submitting, and gives a tenth of its jobs a `callback_url`; a real HTTP server on
127.0.0.1 answers 500 to a seeded random 30% of requests and 200 to the rest, and records them
all. After the jobs have finished, the check waits until each one was told (answered 200),
then counts what the receiver got against the database.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scripts.stack import Api
from webhooks.signing import verify
from webhooks.tests.receiver import Received, Receiver

# Deliveries may reach loopback in this run only; retries come within seconds, and enough of
# them that a delivery failing every time (0.3^11) is as good as impossible, so a missing
# terminal state means a delivery was lost, not given up on.
WEBHOOK_ENV = {
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    "WEBHOOK_RETRY_SCHEDULE": "1,2,4,8,15,15,15,15,15,15",
    "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
}
TERMINAL_EVENT_TYPES = ["job.completed", "job.failed", "job.cancelled"]
FAILURE_SHARE = 0.3
RECEIVER_SEED = 16  # The number: a run's answers are drawn in the same order.
TOLD_POLL_SECONDS = 1.0
TOLD_PROGRESS_SECONDS = 10.0


class FlakyReceiver(Receiver):
    """A Receiver whose answer is 500 for a seeded random share of requests, else 200."""

    def __init__(self, failure_share: float = FAILURE_SHARE, seed: int = RECEIVER_SEED) -> None:
        rng = random.Random(seed)  # noqa: S311 - failures to inject, not secrets.
        lock = threading.Lock()

        def answer(received: Received) -> tuple[int, bytes]:
            with lock:  # One draw at a time: the server answers on many threads.
                failed = rng.random() < failure_share
            return (500, b"injected failure") if failed else (200, b"")

        super().__init__(answer=answer)

    @property
    def endpoint_url(self) -> str:
        return self.url + "/endpoint"

    @property
    def callback_url(self) -> str:
        return self.url + "/callback"


def endpoint_create(api: Api, url: str) -> str:
    """Make the user's endpoint for its terminal events through the API; return its secret."""
    status, data = api.request(
        "POST", "/api/webhooks/", {"url": url, "event_types": TERMINAL_EVENT_TYPES}
    )
    if status != 201:
        raise RuntimeError(f"could not create the webhook endpoint: {status} {data}")
    return data["secret"]


@dataclass
class Hooks:
    """What the chaos user set up: the receiver, the endpoint's secret, the callbacks'."""

    receiver: FlakyReceiver
    endpoint_secret: str
    # The callback_secret of each accepted job that was given a callback_url.
    callback_secrets: dict[uuid.UUID, str]


def _job_id(received: Received) -> uuid.UUID:
    return uuid.UUID(received.payload["data"]["job"]["id"])


def _signed_by(received: Received, secret: str | None) -> bool:
    headers = received.headers
    return secret is not None and verify(
        secret,
        webhook_id=headers["webhook-id"],
        timestamp=int(headers["webhook-timestamp"]),
        body=received.body,
        header=headers["webhook-signature"],
    )


def _told(receipts: list[Received], path: str) -> dict[uuid.UUID, Received]:
    """Per job, a terminal event the receiver accepted (answered 200) on `path`."""
    return {
        _job_id(received): received
        for received in receipts
        if received.path.endswith(path)
        and received.status == 200
        and received.payload["type"] in TERMINAL_EVENT_TYPES
    }


def count_told(hooks: Hooks, statuses: dict[uuid.UUID, str]) -> dict[str, Any]:
    """Compare what the receiver got with the jobs' final statuses in the database."""
    receiver = hooks.receiver
    receipts = [received for received in list(receiver.received) if received.status]
    endpoint_path, callback_path = "/endpoint", "/callback"
    told = _told(receipts, endpoint_path)
    called_back = _told(receipts, callback_path)
    callbacks = {pk for pk in hooks.callback_secrets if pk in statuses}

    webhook_ids: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    accepted: Counter[str] = Counter()
    duplicates_after_200 = 0
    for received in receipts:  # In the order they came.
        webhook_id = received.headers["webhook-id"]
        webhook_ids[received.path, received.payload["id"]].add(webhook_id)
        duplicates_after_200 += bool(accepted[webhook_id])
        accepted[webhook_id] += received.status == 200

    def secret_of(received: Received) -> str | None:
        if received.path.endswith(callback_path):
            return hooks.callback_secrets.get(_job_id(received))
        return hooks.endpoint_secret

    return {
        "told": sum(pk in told for pk in statuses),
        "told_missing": sum(pk not in told for pk in statuses),
        "callbacks": len(callbacks),
        "callbacks_told": sum(pk in called_back for pk in callbacks),
        "callbacks_missing": sum(pk not in called_back for pk in callbacks),
        "events_with_more_than_one_webhook_id": sum(len(ids) > 1 for ids in webhook_ids.values()),
        "bad_signatures": sum(not _signed_by(r, secret_of(r)) for r in receipts),
        "wrong_status": sum(
            r.payload["data"]["job"]["status"] != statuses.get(pk)
            for pk, r in [*told.items(), *called_back.items()]
        ),
        "deliveries_received": len(receipts),
        "deliveries_rejected": sum(received.status != 200 for received in receipts),
        "duplicates_after_200": duplicates_after_200,
    }


def wait_until_told(
    hooks: Hooks,
    read_statuses: Callable[[], dict[uuid.UUID, str]],
    within: float,
    between_polls: Callable[[], None],
) -> dict[str, Any]:
    """Wait up to `within` seconds for every terminal job to be told; return the count.

    `read_statuses` gives the terminal jobs' statuses, `between_polls` runs between looks
    (the chaos restarts workers that stopped by themselves).
    """
    started = time.monotonic()
    last_progress = started
    while True:
        figures = count_told(hooks, read_statuses())
        waited = time.monotonic() - started
        done = not figures["told_missing"] and not figures["callbacks_missing"]
        if done or waited >= within:
            return {**figures, "told_time": waited}
        if time.monotonic() - last_progress >= TOLD_PROGRESS_SECONDS:
            last_progress = time.monotonic()
            print(
                f"waiting for webhooks - told {figures['told']} of "
                f"{figures['told'] + figures['told_missing']} jobs, callbacks "
                f"{figures['callbacks_told']} of {figures['callbacks']}, after {waited:.0f} s",
                flush=True,
            )
        time.sleep(TOLD_POLL_SECONDS)
        between_polls()


FAILING_FIGURES = (
    "told_missing",
    "callbacks_missing",
    "events_with_more_than_one_webhook_id",
    "bad_signatures",
    "wrong_status",
)


def webhook_failures(figures: dict[str, Any]) -> list[str]:
    """A terminal state not told, or told wrong; or a receiver that never failed."""
    problems = [name for name in FAILING_FIGURES if figures[name]]
    if not figures["deliveries_rejected"]:
        problems.append("webhook_chaos_incomplete")
    return problems


def print_webhook_figures(figures: dict[str, Any]) -> None:
    for name in ("told", "told_missing", "callbacks", "callbacks_told", "callbacks_missing"):
        print(f"{name}: {figures[name]} jobs")
    print(
        "events_with_more_than_one_webhook_id: "
        f"{figures['events_with_more_than_one_webhook_id']} events"
    )
    for name in ("bad_signatures", "wrong_status"):
        print(f"{name}: {figures[name]} deliveries")
    for name in ("deliveries_received", "deliveries_rejected", "duplicates_after_200"):
        print(f"{name}: {figures[name]} requests")
    print(f"told_time: {figures['told_time']:.1f} s after the jobs finished")
