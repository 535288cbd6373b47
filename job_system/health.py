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


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Report whether the database, Redis and at least one worker answer",
        responses={
            (200, "application/json"): inline_serializer(
                "Health",
                {
                    "status": serializers.CharField(),
                    "database": serializers.CharField(),
                    "redis": serializers.CharField(),
                    "workers": serializers.IntegerField(),
                },
            ),
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
