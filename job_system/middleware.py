from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.common import CommonMiddleware


class RequestSizeLimitMiddleware:
    """Refuse a request body over MAX_REQUEST_BODY_BYTES with 413, before anything reads it.

    Django's own DATA_UPLOAD_MAX_MEMORY_SIZE still guards bodies sent without a length.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            return JsonResponse(
                {"detail": "Content-Length must be a number.", "code": "bad_length"}, status=400
            )
        if length > settings.MAX_REQUEST_BODY_BYTES:
            limit = settings.MAX_REQUEST_BODY_BYTES
            return JsonResponse(
                {
                    "detail": f"The request body is larger than {limit} bytes.",
                    "code": "request_too_large",
                },
                status=413,
            )
        return self.get_response(request)


class ApiCommonMiddleware(CommonMiddleware):
    """Django's CommonMiddleware, except that it never redirects an API call that has a body.

    APPEND_SLASH answers a route without its trailing slash with a 301 to the route, which
    clients follow with a GET, so a POST to /api/jobs would list jobs instead of creating
    one; with DEBUG on, Django raises an error instead, a 500. Under /api/, a method other
    than GET and HEAD gets the API's JSON 404 naming the route instead. GET and HEAD are
    still redirected, as a 301 loses nothing of them.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code == 404
            and request.path.startswith("/api/")
            and request.method not in ("GET", "HEAD")
            and self.should_redirect_with_slash(request)
        ):
            return JsonResponse(
                {
                    "detail": f"Not found. The route is {request.path}/, with a slash at the end.",
                    "code": "not_found",
                },
                status=404,
            )
        return super().process_response(request, response)
