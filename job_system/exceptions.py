from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from jobs.services import OwnerDeleted
from users.authentication import recent_users


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus a machine-readable `code` beside every top-level `detail`.

    Clients branch on `code` ("email_not_verified", "not_authenticated", "throttled", ...)
    instead of parsing English. A request whose account was deleted while it ran gets the
    401 that authentication would give it now.
    """
    if isinstance(exc, OwnerDeleted):
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
