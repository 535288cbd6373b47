"""How many streams may be open: EVENT_STREAMS_PER_PROCESS here, EVENT_STREAMS_PER_USER anywhere.

A user's streams may sit in several events processes, so they are counted in Redis: a sorted
set per user of stream ids, each scored with the time it lapses. A stream renews its entry at
every keep-alive and removes it when it ends; the entry of a process that was killed lapses a
few keep-alives later. If Redis does not answer, the stream opens uncounted: streams read the
database, and refusing them all while Redis is away would be the larger harm.
"""

import logging
import time
import uuid

import redis
import redis.asyncio

logger = logging.getLogger(__name__)

USER_STREAMS_KEY = "jobsys:event-streams:{owner}"
# An entry lives this many keep-alives without renewal.
LAPSE_KEEPALIVES = 3

# Drop lapsed entries; if fewer than the limit remain, add this stream's and answer 1.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class ProcessSlots:
    """The streams this process holds, up to its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken -= 1


class UserSlots:
    """A user's open streams across every events process, in Redis."""

    def __init__(self, redis_url: str, *, limit: int, keepalive_seconds: float) -> None:
        self.limit = limit
        self.lapse_seconds = LAPSE_KEEPALIVES * keepalive_seconds
        self._client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=2)
        self._take = self._client.register_script(_TAKE)

    async def take(self, owner_id: int) -> str | None:
        """Count a new stream of the owner's; return its id, or None if they have too many."""
        stream_id = uuid.uuid4().hex
        now = time.time()
        try:
            taken = await self._take(
                keys=[USER_STREAMS_KEY.format(owner=owner_id)],
                args=[now, now + self.lapse_seconds, self.limit, stream_id, self._ttl_ms()],
            )
        except (redis.RedisError, OSError) as error:
            logger.warning("could not count the streams of user %s: %s", owner_id, error)
            return stream_id
        return stream_id if taken else None

    async def renew(self, owner_id: int, stream_id: str) -> None:
        key = USER_STREAMS_KEY.format(owner=owner_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {stream_id: time.time() + self.lapse_seconds})
                pipe.pexpire(key, self._ttl_ms())
                await pipe.execute()
        except (redis.RedisError, OSError) as error:
            logger.warning("could not renew a stream of user %s: %s", owner_id, error)

    async def release(self, owner_id: int, stream_id: str) -> None:
        try:
            await self._client.zrem(USER_STREAMS_KEY.format(owner=owner_id), stream_id)
        except (redis.RedisError, OSError) as error:
            logger.warning("could not uncount a stream of user %s: %s", owner_id, error)

    def _ttl_ms(self) -> int:
        return int(self.lapse_seconds * 1000) + 1000
