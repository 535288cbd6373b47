"""A URLconf with views that crash, to see what a client gets from a server error."""

import sqlite3

import redis
from django.db import OperationalError
from django.urls import path

from job_system.urls import handler500  # noqa: F401 - Django looks it up on this module


def crash(request):
    return 1 / 0


def database_locked(request):
    # As Django raises it when SQLite's write lock outlasts the busy timeout.
    raise OperationalError("database is locked") from sqlite3.OperationalError("database is locked")


def query_broken(request):
    # An OperationalError that is a bug in a query, not an outage.
    raise OperationalError("no such column: x") from sqlite3.OperationalError("no such column: x")


def redis_down(request):
    # A real connection that is refused: nothing listens on port 1.
    redis.Redis.from_url("redis://127.0.0.1:1/0").ping()


urlpatterns = [
    path("broken/", crash),
    path("locked/", database_locked),
    path("bad-query/", query_broken),
    path("redis-down/", redis_down),
]
