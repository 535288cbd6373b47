"""Request throttles that cost one Redis round trip and a few bytes, whatever the rate.

DRF's SimpleRateThrottle keeps a list of every request's timestamp in the window, reads it
and writes it back on each request: at the job-create rate (6,000/min) that is tens of KB
pickled twice per request, and two concurrent requests can both read the old list and pass
(encode/django-rest-framework#5181). These throttles count instead: INCR on the current
window's counter, atomic in Redis, and the previous window's count weighs in by how much of
it the sliding window still covers (the sliding-window-counter estimate).

The estimate assumes the previous window's requests were spread evenly, so it can refuse a
little early or late; that suits a high rate like job creation. The account endpoints keep
DRF's exact log: their rates are a few per minute, where the log is short and "10 an hour"
must mean exactly that.
"""

import logging
import math

import redis
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from job_system.cache import cache_redis

logger = logging.getLogger(__name__)


class CountingRateThrottle(SimpleRateThrottle):
    """A SimpleRateThrottle over per-window counters; subclasses give get_cache_key()."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window, self.elapsed = divmod(self.now, self.duration)
        current, previous = (
            cache.make_and_validate_key(f"{key}:{int(window) - n}") for n in (0, 1)
        )
        # The cache's Redis, so counters share its server and key prefix. One pipeline:
        # count this request, keep the counter for two windows, read the previous window.
        client = cache_redis()
        pipe = client.pipeline(transaction=False)
        pipe.incr(current)
        pipe.expire(current, 2 * self.duration)
        pipe.get(previous)
        try:
            count, _, before = pipe.execute()
        except redis.RedisError:
            # Redis restarting: the counters are gone anyway, and a throttle is no security
            # control; letting the request through beats refusing every client with a 5xx.
            logger.warning("throttle %s not counted: Redis is unavailable", self.scope)
            return True
        self.estimate = count + int(before or 0) * (1 - self.elapsed / self.duration)
        if self.estimate > self.num_requests:
            # A refused request should not hold the client back any longer.
            client.decr(current)
            return False
        return True

    def wait(self) -> float:
        """Seconds until the estimate drops below the limit, at the latest the next window."""
        return max(1.0, math.ceil(self.duration - self.elapsed))


class ScopedCountingThrottle(ScopedRateThrottle, CountingRateThrottle):
    """Per user, else per IP, under the view's throttle_scope (DRF's ScopedRateThrottle).

    ScopedRateThrottle picks the rate from the view, then its super() call counts here.
    """
