"""A health check for load balancers, `make run` and operators."""

import redis
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from job_system.celery import app as celery_app

WORKER_PING_TIMEOUT_SECONDS = 1.0


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def check_redis() -> str:
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
        client.ping()
    except redis.RedisError as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def count_workers() -> int:
    try:
        replies = celery_app.control.ping(timeout=WORKER_PING_TIMEOUT_SECONDS)
    except Exception:
        return 0
    return len(replies)


HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(help_text="`ok`, or `unavailable` with the 503."),
        "database": serializers.CharField(help_text="`ok`, or `error: ` and the error's name."),
        "redis": serializers.CharField(help_text="`ok`, or `error: ` and the error's name."),
        "workers": serializers.IntegerField(help_text="Workers that answered a ping."),
    },
)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Report whether the database, Redis and at least one worker answer",
        description="200 when all three answer; 503, with the same body, when one does not.",
        responses={
            (200, "application/json"): HEALTH,
            (503, "application/json"): HEALTH,
        },
    )
    def get(self, request: Request) -> Response:
        database = check_database()
        broker = check_redis()
        workers = count_workers() if broker == "ok" else 0
        healthy = database == "ok" and broker == "ok" and workers > 0
        body = {
            "status": "ok" if healthy else "unavailable",
            "database": database,
            "redis": broker,
            "workers": workers,
        }
        return Response(body, status=200 if healthy else 503)
