import logging
import sqlite3
import sys

import redis
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from users.authentication import recent_users
from users.exceptions import AccountDeleted

logger = logging.getLogger(__name__)

# What a client is told to wait before trying again while the database or Redis is unreachable:
# about a restart of either, or a SQLite write lock held past the busy timeout.
DATABASE_RETRY_AFTER_SECONDS = 5
# PostgreSQL's codes for "the server is going away or not there yet": connection exceptions
# (class 08), and an administrator's or a crash's shutdown, or a server still starting (57P0x).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03")


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus a machine-readable `code` beside every top-level `detail`.

    Clients branch on `code` ("email_not_verified", "not_authenticated", "throttled", ...)
    instead of parsing English. A request whose account was deleted while it ran gets the
    401 that authentication would give it now.
    """
    if isinstance(exc, AccountDeleted):
        exc = _account_deleted(context)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict):
        detail = response.data.get("detail")
        code = getattr(detail, "code", None)
        if code is not None:
            response.data.setdefault("code", code)
    return response


def _account_deleted(context: dict) -> AuthenticationFailed:
    """The 401 that authentication gives a token whose account no longer exists.

    The account was there when the request was authenticated (or when this process last
    read it), and is gone now; its next request is refused at authentication.
    """
    request = context["request"]
    recent_users.forget_user(request.user)
    error = AuthenticationFailed("User not found", code="user_not_found")
    error.auth_header = context["view"].get_authenticate_header(request)
    return error


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """An unknown address under /api/ gets the API's JSON 404; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """JSON for an unhandled error: 503 with Retry-After if the database or Redis was out of reach.

    Django calls this for an exception from any view (DRF's, plain Django's, the admin's) or
    middleware, inside its `except` block, so the exception is still at hand. An outage is not
    a bug: the client is asked to come back, and the log gets one line, not a traceback.
    Submissions do without Redis while it restarts (their throttle lets them through, their cap
    is counted in the database); what needs it, such as the account endpoints' throttles,
    answers 503.
    """
    error = sys.exc_info()[1]
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        part = "redis"
    elif error is not None and database_unavailable(error):
        part = "database"
    else:
        return drf_exceptions.server_error(request, *args, **kwargs)
    logger.warning("%s unavailable: %s %s: %s", part, request.method, request.path, error)
    response = unavailable_response(part)
    # Django would log it again, with the traceback, as a server error.
    response._has_been_logged = True
    return response


def unavailable_response(part: str) -> JsonResponse:
    """503 for a part the service cannot do without (`database` or `redis`), with Retry-After."""
    response = JsonResponse(
        {
            "detail": "The service is briefly unavailable. Try again shortly.",
            "code": f"{part}_unavailable",
        },
        status=503,
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached, rather than a bug in a query.

    A connection refused, cut or already closed; PostgreSQL shutting down or starting; SQLite's
    write lock held past the busy timeout. Not a syntax error or a missing table, which are
    OperationalErrors too.
    """
    if isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    cause = error.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return "locked" in str(cause) or "busy" in str(cause)
    sqlstate = getattr(cause, "sqlstate", None)
    # psycopg gives no code when there is no server to give one: refused, or cut off.
    return sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
