"""Health checks for load balancers, `make run` and operators: liveness and readiness.

Liveness checks nothing outside the web process: it answers if the process answers requests.
Readiness checks that the database and Redis answer and that at least one worker's heartbeat
is fresh (job_system.heartbeats). Anyone may ask, without logging in, so what one request can
cost is bounded: each check gives up after a short timeout, and each web process reuses its
last readiness answer for READINESS_CACHE_SECONDS, one thread checking while the others take
the last answer.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from job_system.heartbeats import HEARTBEAT_TTL_SECONDS, workers_alive

DATABASE_TIMEOUT_SECONDS = 1.0
READINESS_CACHE_SECONDS = 1.0

# One thread, so that a database that stopped answering holds at most this one; the checks
# queued behind it give up on time.
_database_checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness-database")


def _select_one() -> str:
    # On the checker thread's own connection, closed each time: the next check connects
    # afresh, and no connection outlives its check.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    finally:
        connection.close()
    return "ok"


def _outcome(check: Future, timeout: float) -> str:
    try:
        return check.result(timeout=timeout)
    except TimeoutError:
        check.cancel()
        return "error: timeout"


def check_redis_and_workers() -> tuple[str, int]:
    """Return Redis's state (`ok`, or `error: ` and the error's name) and the live workers."""
    try:
        return "ok", workers_alive()
    except redis.RedisError as exc:
        return f"error: {type(exc).__name__}", 0


def readiness() -> dict[str, Any]:
    """Check Redis and the workers' heartbeats while the checker thread asks the database."""
    database = _database_checker.submit(_select_one)
    broker, workers = check_redis_and_workers()
    database_state = _outcome(database, DATABASE_TIMEOUT_SECONDS)
    ready = database_state == "ok" and broker == "ok" and workers > 0
    return {
        "status": "ok" if ready else "unavailable",
        "database": database_state,
        "redis": broker,
        "workers": workers,
    }


class RecentAnswer:
    """A web process's last readiness answer, reused for READINESS_CACHE_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._answer: dict[str, Any] | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        answer = self._answer
        if answer is not None and self._clock() < self._expires:
            return answer
        # One thread computes; meanwhile the others take the last answer, or wait for the
        # first one.
        if not self._lock.acquire(blocking=answer is None):
            return answer
        try:
            if self._answer is None or self._clock() >= self._expires:
                self._answer = compute()
                self._expires = self._clock() + READINESS_CACHE_SECONDS
            return self._answer
        finally:
            self._lock.release()

    def clear(self) -> None:
        with self._lock:
            self._answer = None


recent_readiness = RecentAnswer()

LIVENESS = inline_serializer("Liveness", {"status": serializers.CharField(help_text="`ok`.")})
READINESS = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(help_text="`ok`, or `unavailable` with the 503."),
        "database": serializers.CharField(
            help_text="`ok`, or `error: ` and the error's name (`error: timeout` when it did "
            f"not answer within {DATABASE_TIMEOUT_SECONDS:g} s)."
        ),
        "redis": serializers.CharField(help_text="`ok`, or `error: ` and the error's name."),
        "workers": serializers.IntegerField(
            help_text=f"Workers whose heartbeat is at most {HEARTBEAT_TTL_SECONDS} s old."
        ),
    },
)


class PublicView(APIView):
    """Open to anyone, without a token: load balancers and orchestrators ask these."""

    authentication_classes: list = []
    permission_classes = [AllowAny]


class LivenessView(PublicView):
    @extend_schema(
        summary="Report that this web process answers requests",
        description="Checks nothing else, so that a process is not restarted for an outage "
        "of the database, Redis or the workers; /api/health/ready/ reports those.",
        responses={(200, "application/json"): LIVENESS},
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadinessView(PublicView):
    @extend_schema(
        summary="Report whether the database, Redis and at least one worker are up",
        description="200 when all three are; 503, with the same body, when one is not. "
        "Workers count while their heartbeat is fresh. Each web process reuses its answer for "
        f"{READINESS_CACHE_SECONDS:g} s. `/api/health/` and `/api/health/ready/` are the same.",
        responses={
            (200, "application/json"): READINESS,
            (503, "application/json"): READINESS,
        },
    )
    def get(self, request: Request) -> Response:
        body = recent_readiness.get(readiness)
        ready = body["status"] == "ok"
        response = Response(body, status=200 if ready else 503)
        if not ready:
            # An answer, not a fault: `make run` and load balancers ask while workers start.
            # The access log has its line; this is Django's own mark (django.utils.log) that
            # keeps django.request from adding an ERROR.
            response._has_been_logged = True
        return response
