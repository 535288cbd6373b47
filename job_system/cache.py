"""The Redis behind Django's default cache, for counters that need more than get and set."""

from weakref import WeakKeyDictionary

import redis
from django.core.cache import cache

_clients: WeakKeyDictionary = WeakKeyDictionary()


def cache_redis() -> redis.Redis:
    """A client on the default cache's connection pool, made once per cache backend.

    Django's RedisCache.get_client() builds a new redis.Redis, with its table of some 200
    response callbacks, on every call: three times per job submission (0.5 ms) before this.
    Keys still go through cache.make_and_validate_key(), so the cache's prefix applies.
    """
    backend = cache._cache  # A new one when a test changes CACHES.
    client = _clients.get(backend)
    if client is None:
        client = _clients[backend] = backend.get_client(write=True)
    return client
