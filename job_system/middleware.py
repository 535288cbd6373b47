from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


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
