"""The events process: GET /api/events/ as Server-Sent Events, and nothing else (ASGI).

A stream is a loop: read the owner's events after the client's position from the table, send
them, then wait until the hub says the owner has new ones, or until the keep-alive, and read
again. The table is the truth, so a lost announcement only delays an event to the next
keep-alive (and a new stream reads every UNHEARD_READ_SECONDS for its first second, when
announcements may not come yet). A resumed stream is gapless: a user's events are numbered
after they commit, one numbering at a time (events.recording.number_events, which a read
runs first), so once a reader has seen n it has seen everything before n.

Streams wait in one event loop; their reads run in a small pool of threads, each with its own
database connection kept as a web thread keeps one, so a thousand streams use a few
connections. The request is checked by the same DRF view code as every endpoint
(events.views), in that pool too.
"""

import asyncio
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections

from events.hub import Hub
from events.limits import ProcessSlots, UserSlots
from events.payloads import event_payload
from events.recording import UNHEARD_SECONDS, number_events
from events.selectors import events_after, stream_position
from events.views import EventStreamOpeningView, StreamOpening

logger = logging.getLogger(__name__)

STREAM_PATH = "/api/events/"
# Events sent per read of the table; a longer backlog is read again at once.
READ_LIMIT = 500
# What a browser's EventSource waits before reconnecting after the stream ends.
RECONNECT_MILLISECONDS = 1000
# When this process is full, retry after about this many seconds.
RETRY_AFTER_SECONDS = 5
# How often a new stream reads the table while processes may still believe that its user has
# no listener (events.recording.UNHEARD_SECONDS), and so announce nothing to it.
UNHEARD_READ_SECONDS = 0.1

_db_threads = ThreadPoolExecutor(settings.EVENT_STREAM_DB_THREADS, thread_name_prefix="events-db")
hub = Hub(settings.REDIS_URL)
process_slots = ProcessSlots(settings.EVENT_STREAMS_PER_PROCESS)
user_slots = UserSlots(
    settings.REDIS_URL,
    limit=settings.EVENT_STREAMS_PER_USER,
    keepalive_seconds=settings.EVENT_STREAM_KEEPALIVE_SECONDS,
)


async def application(scope: dict, receive: Any, send: Any) -> None:
    """The ASGI application that uvicorn serves (events.asgi)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] != STREAM_PATH:
        await _send_json(send, 404, {"detail": "Not found.", "code": "not_found"})
        return
    if scope["method"] != "GET":
        await _send_json(
            send,
            405,
            {"detail": f'Method "{scope["method"]}" not allowed.', "code": "method_not_allowed"},
            [(b"allow", b"GET")],
        )
        return
    hub.start()
    if not process_slots.take():
        await _send_json(
            send,
            503,
            {"detail": "This process holds all the streams it may.", "code": "streams_full"},
            [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
        )
        return
    try:
        await _check_and_stream(scope, receive, send)
    finally:
        process_slots.release()


async def _check_and_stream(scope: dict, receive: Any, send: Any) -> None:
    checked = await in_db_thread(check_request, scope)
    if checked.status != 200:
        await _send(send, checked.status, checked.headers, checked.body)
        return
    opening = StreamOpening(**json.loads(checked.body))
    stream_id = await user_slots.take(opening.owner_id)
    if stream_id is None:
        detail = f"You have {settings.EVENT_STREAMS_PER_USER} streams open; close one first."
        await _send_json(send, 429, {"detail": detail, "code": "too_many_streams"})
        return
    try:
        await Stream(opening, stream_id, send).run(receive)
    finally:
        await user_slots.release(opening.owner_id, stream_id)


async def in_db_thread(function: Any, *args: Any) -> Any:
    """Run a function that uses the database in the pool, as a request would run."""
    return await asyncio.get_running_loop().run_in_executor(
        _db_threads, partial(_as_request, function, *args)
    )


def _as_request(function: Any, *args: Any) -> Any:
    # Django's request_started and request_finished do this around each request: drop a
    # connection that is broken or older than DB_CONN_MAX_AGE, keep the rest for the next call.
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


@dataclass(frozen=True)
class Checked:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def check_request(scope: dict) -> Checked:
    """Authenticate and validate the request as the API does; 200 carries the StreamOpening."""
    response = EventStreamOpeningView.as_view()(ASGIRequest(scope, io.BytesIO()))
    response.render()
    # DRF's Allow names HEAD and OPTIONS, which this process does not serve.
    headers = [
        (name.lower().encode(), value.encode())
        for name, value in response.items()
        if name.lower() != "allow"
    ]
    return Checked(response.status_code, headers, response.content)


class Stream:
    """One client's stream, from its opening position until it leaves or its token expires."""

    def __init__(self, opening: StreamOpening, stream_id: str, send: Any) -> None:
        self.opening = opening
        self.stream_id = stream_id
        self.send = send
        self.keepalive = settings.EVENT_STREAM_KEEPALIVE_SECONDS

    async def run(self, receive: Any) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    # nginx would otherwise hold events back to fill its buffer.
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await self._write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode())
        with hub.listen(self.opening.owner_id) as wake:
            watcher = asyncio.get_running_loop().create_task(_wait_for_disconnect(receive, wake))
            try:
                await self._loop(wake, watcher)
            finally:
                watcher.cancel()
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _loop(self, wake: asyncio.Event, watcher: asyncio.Task) -> None:
        # This stream was counted before it began: beliefs taken before that end by then.
        heard_from = time.monotonic() + UNHEARD_SECONDS
        position, reset = await in_db_thread(starting_position, self.opening)
        if reset:
            await self._write(reset)
        next_keepalive = time.monotonic() + self.keepalive
        while not watcher.done():
            wake.clear()  # Before the read: an announcement from now on means read again.
            frames, position, more = await in_db_thread(read_events, self.opening, position)
            if frames:
                await self._write(frames)
            if more:
                continue
            now = time.monotonic()
            wait = min(next_keepalive - now, self.opening.token_expires_at - time.time())
            if now < heard_from:
                wait = min(wait, UNHEARD_READ_SECONDS)
            with suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0, wait))
            if watcher.done():
                return
            if time.time() >= self.opening.token_expires_at:
                await self._write(frame("stream.end", {"reason": "token_expired"}))
                return
            if time.monotonic() >= next_keepalive:
                await self._write(b": keep-alive\n\n")
                await user_slots.renew(self.opening.owner_id, self.stream_id)
                next_keepalive = time.monotonic() + self.keepalive

    async def _write(self, body: bytes) -> None:
        await self.send({"type": "http.response.body", "body": body, "more_body": True})


async def _wait_for_disconnect(receive: Any, wake: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    wake.set()


def frame(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One Server-Sent Event; compact JSON holds no newline, so `data` is one line."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines += [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'))}"]
    return ("\n".join(lines) + "\n\n").encode()


def starting_position(opening: StreamOpening) -> tuple[int, bytes]:
    """Where the stream starts, and the stream.reset event to send first if the client's
    position is gone or unknown.

    The reset carries the new position as its id, so that a client that reconnects right
    after it resumes from there, without a second reset.
    """
    number_events(opening.owner_id)
    last_seq, pruned_through = stream_position(owner_id=opening.owner_id)
    after = opening.after
    if after < pruned_through:
        reason, position = "events_expired", pruned_through
    elif after > last_seq:
        reason, position = "unknown_event_id", last_seq
    else:
        return after, b""
    data = {"reason": reason, "last_event_id": after, "resumes_after": position}
    return position, frame("stream.reset", data, event_id=position)


def read_events(opening: StreamOpening, after: int) -> tuple[bytes, int, bool]:
    """The frames of the events after `after`, the new position, and whether more wait."""
    number_events(opening.owner_id)
    events = events_after(
        owner_id=opening.owner_id, after=after, job_id=opening.job_id, limit=READ_LIMIT
    )
    frames = b"".join(frame(event.type, event_payload(event), event.seq) for event in events)
    position = events[-1].seq if events else after
    return frames, position, len(events) == READ_LIMIT


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            hub.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await hub.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_json(
    send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()
) -> None:
    content = [(b"content-type", b"application/json"), *headers]
    await _send(send, status, content, json.dumps(body).encode())


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
