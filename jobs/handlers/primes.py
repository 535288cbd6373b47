"""Count the primes up to a limit with a segmented sieve of Eratosthenes (CPU-bound)."""

import math
from collections import deque
from collections.abc import Iterator
from typing import Any

from rest_framework import serializers

from jobs.handlers import register
from jobs.handlers.base import JobHandler, Progress

# The range is sieved in about this many segments, one progress report each: often enough
# to see movement and to notice a cancellation, rarely enough not to flood the database.
SEGMENTS = 50
# Below this a segment is cheaper to sieve than to report on, so small limits use fewer.
MIN_SEGMENT_SIZE = 1 << 16
SAMPLE_SIZE = 10


class PrimesParameters(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=2, max_value=20_000_000, help_text="Find the primes up to and including this."
    )


@register
class Primes(JobHandler):
    name = "primes"
    description = "Count the prime numbers up to a limit and list the first and last few."
    Parameters = PrimesParameters
    queue = "cpu"
    timeout_seconds = 120
    # A large limit holds a core for tens of seconds, and the machines have few.
    concurrency_limit = 2

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        limit: int = params["limit"]
        base_primes = _primes_up_to(math.isqrt(limit))
        span = limit - 1  # the numbers 2..limit
        segment_size = max(-(-span // SEGMENTS), MIN_SEGMENT_SIZE)
        count = 0
        first: list[int] = []
        last: deque[int] = deque(maxlen=SAMPLE_SIZE)
        for low in range(2, limit + 1, segment_size):
            high = min(low + segment_size, limit + 1)
            segment = _sieve_segment(low, high, base_primes)
            count += segment.count(1)
            for offset in _offsets(segment, SAMPLE_SIZE - len(first)):
                first.append(low + offset)
            tail = [low + offset for offset in _offsets_from_end(segment, SAMPLE_SIZE)]
            last.extend(reversed(tail))
            progress((high - 2) * 100 // span)
        return {
            "limit": limit,
            "count": count,
            "largest": last[-1],
            "first": first,
            "last": list(last),
        }


def _primes_up_to(n: int) -> list[int]:
    """Return the primes up to n (at least 1) with a plain sieve; n is at most a few thousand."""
    sieve = bytearray([1]) * (n + 1)
    sieve[:2] = bytes(2)
    for p in range(2, math.isqrt(n) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, n + 1, p)))
    return [number for number, is_prime in enumerate(sieve) if is_prime]


def _sieve_segment(low: int, high: int, base_primes: list[int]) -> bytearray:
    """Return flags for low..high-1, 1 where the number is prime; low must be at least 2."""
    segment = bytearray([1]) * (high - low)
    for p in base_primes:
        if p * p >= high:
            break
        # Start at p*p (smaller multiples have a smaller factor) or the first multiple in range.
        start = max(p * p, -(-low // p) * p) - low
        segment[start::p] = bytes(len(range(start, high - low, p)))
    return segment


def _offsets(segment: bytearray, limit: int) -> Iterator[int]:
    """Yield up to `limit` offsets of primes in the segment, ascending."""
    offset = segment.find(1)
    for _ in range(limit):
        if offset == -1:
            return
        yield offset
        offset = segment.find(1, offset + 1)


def _offsets_from_end(segment: bytearray, limit: int) -> Iterator[int]:
    """Yield up to `limit` offsets of primes in the segment, descending."""
    offset = segment.rfind(1)
    for _ in range(limit):
        if offset == -1:
            return
        yield offset
        offset = segment.rfind(1, 0, offset)
