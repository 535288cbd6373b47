"""The events process's one Redis subscription, fanned out to the streams of each user.

events.recording publishes a user's id on CHANNEL after each commit that gave them events.
One subscription per process hears every announcement and wakes that user's streams, which
then read the table: the message is a hint, never the data. When Redis drops, the hub
subscribes again with a growing pause, and once it is back it wakes every stream, since
announcements made meanwhile were lost. Streams do not depend on it: each also reads the table
at every keep-alive.
"""

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
import redis.asyncio

from events.recording import CHANNEL

logger = logging.getLogger(__name__)

# Pauses between attempts to subscribe again: doubling from the first to the last, with jitter
# so that many processes do not reconnect in step.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# Without a message for this long, the subscription pings Redis, so a dead connection is
# noticed rather than waited on.
HEALTH_CHECK_SECONDS = 10


class Hub:
    """Wake the streams of a user whose events were announced; start() it in the event loop."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.subscribed = asyncio.Event()
        self._streams: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Subscribe in the background, once per process; later calls do nothing."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextmanager
    def listen(self, owner_id: int) -> Iterator[asyncio.Event]:
        """An event that is set whenever the owner's events are announced, while in use."""
        wake = asyncio.Event()
        self._streams[owner_id].add(wake)
        try:
            yield wake
        finally:
            streams = self._streams[owner_id]
            streams.discard(wake)
            if not streams:
                del self._streams[owner_id]

    def wake(self, owner_id: int) -> None:
        for wake in self._streams.get(owner_id, ()):
            wake.set()

    def wake_all(self) -> None:
        for streams in self._streams.values():
            for wake in streams:
                wake.set()

    async def _run(self) -> None:
        pause = RECONNECT_FIRST_SECONDS
        while True:
            try:
                await self._subscribe_and_listen()
            except (redis.RedisError, OSError) as error:
                if self.subscribed.is_set():
                    pause = RECONNECT_FIRST_SECONDS  # It had worked: start the pauses over.
                logger.warning(
                    "events hub lost Redis (%s); subscribing again in %.1fs", error, pause
                )
            self.subscribed.clear()
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - jitter only.
            pause = min(pause * 2, RECONNECT_MAX_SECONDS)

    async def _subscribe_and_listen(self) -> None:
        client = redis.asyncio.Redis.from_url(
            self.redis_url, health_check_interval=HEALTH_CHECK_SECONDS, socket_keepalive=True
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
            self.subscribed.set()
            # Whatever was announced before this subscription (while Redis was away) was
            # lost: every stream reads again.
            self.wake_all()
            while True:
                message = await pubsub.get_message(timeout=HEALTH_CHECK_SECONDS)
                if message is not None:
                    self._wake_announced(message["data"])
        finally:
            with suppress(redis.RedisError, OSError):
                await pubsub.aclose()
                await client.aclose()

    def _wake_announced(self, data: bytes) -> None:
        try:
            owner_id = int(data)
        except ValueError:
            logger.warning("events hub: not a user id on %s: %r", CHANNEL, data[:100])
            return
        self.wake(owner_id)
