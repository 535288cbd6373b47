"""Flower for staff at /flower/: the web process logs in to Flower on their behalf.

Flower's basic auth takes guesses as fast as they come, and Flower 2.2 serves /metrics and
/healthcheck (worker names, per-task counts) with no login at all. So Flower listens on
loopback, or on a private address that only the web hosts reach (FLOWER_URL), and people
reach it only through this view: a logged-in, active staff user (the admin's session and
login), each at most at the THROTTLE_FLOWER rate. The view adds Flower's basic auth itself,
so Flower's own check stays on as a second wall.

Only what Flower needs crosses: GET, HEAD and POST, the path under /flower/ (Flower runs with
`--url_prefix=flower`) and its query, the body, and a few named headers each way. Never the
browser's cookies or credentials, never Flower's cookies or login prompt. Flower 2.2 has no
websockets: its pages poll. Answers stream through in chunks, so a large one is never held in
memory.
"""

import base64
import logging
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.utils.encoding import escape_uri_path, iri_to_uri
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from job_system.throttling import CountingRateThrottle

logger = logging.getLogger(__name__)

PREFIX = "/flower/"
# Flower answers these without asking for its password; Prometheus scrapes them where Flower
# runs, and through the web they would only be another way in.
UNGUARDED_PATHS = frozenset({"metrics", "healthcheck"})
REQUEST_HEADERS = ("Accept", "Content-Type", "If-Modified-Since", "If-None-Match")
RESPONSE_HEADERS = (
    "Cache-Control",
    "Content-Length",
    "Content-Type",
    "ETag",
    "Expires",
    "Last-Modified",
)
# Each connect and each read; Flower's slowest pages wait about a second for workers' replies.
TIMEOUT_SECONDS = 10.0
CHUNK_BYTES = 64 * 1024


class FlowerThrottle(CountingRateThrottle):
    """THROTTLE_FLOWER requests per staff user, counted in Redis across web processes."""

    scope = "flower"

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


@csrf_exempt  # Flower's pages post without Django's token; same_origin() stands in for it.
@require_http_methods(["GET", "HEAD", "POST"])
def flower_proxy_view(request: HttpRequest, path: str) -> HttpResponseBase:
    """Answer a staff user with Flower's answer to the same request."""
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return refuse(request, path)
    if request.method == "POST" and not same_origin(request):
        return error(403, "cross_origin", "Flower accepts changes from its own pages only.")
    if not forwarded(path):
        raise Http404
    throttle = FlowerThrottle()
    if not throttle.allow_request(request, None):
        response = error(429, "throttled", "Too many requests to Flower; wait a moment.")
        response["Retry-After"] = str(int(throttle.wait()))
        return response
    return forward(request, path)


def refuse(request: HttpRequest, path: str) -> HttpResponse:
    """Send a browser to the admin's login; answer anything else with 403."""
    page = request.method == "GET" and "text/html" in request.headers.get("Accept", "")
    if page and not path.startswith("api/"):
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if request.user.is_authenticated:
        return error(403, "permission_denied", "Flower is for staff users only.")
    return error(403, "not_authenticated", "Log in to the admin as a staff user first.")


def same_origin(request: HttpRequest) -> bool:
    """Whether the browser says the request comes from a page of this site.

    The session cookie is SameSite=Lax already; this is the second check a CSRF token would be.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    return request.headers.get("Origin") == f"{request.scheme}://{request.get_host()}"


def forwarded(path: str) -> bool:
    """Whether a path under /flower/ may go on to Flower.

    Not Flower's unguarded pages, and no dot or empty segments, which could reach them.
    """
    segments = path.split("/")
    if any(segment in {"", ".", ".."} for segment in segments[:-1]) or segments[-1] in {".", ".."}:
        return False
    return segments[0] not in UNGUARDED_PATHS


def forward(request: HttpRequest, path: str) -> HttpResponseBase:
    """Send the request on to Flower and stream its answer back."""
    target = urlsplit(settings.FLOWER_URL)
    connection_class = HTTPSConnection if target.scheme == "https" else HTTPConnection
    connection = connection_class(target.hostname, target.port, timeout=TIMEOUT_SECONDS)
    # The path that was checked is the path that goes, escaped again as Django decoded it.
    url = PREFIX + escape_uri_path(path)
    if query := request.META.get("QUERY_STRING"):
        url += "?" + iri_to_uri(query)
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    credentials = base64.b64encode(settings.FLOWER_BASIC_AUTH.encode()).decode()
    headers["Authorization"] = f"Basic {credentials}"
    try:
        connection.request(request.method, url, body=request.body or None, headers=headers)
        upstream = connection.getresponse()
    except TimeoutError:
        connection.close()
        return error(504, "flower_timeout", "Flower did not answer in time.")
    except (OSError, HTTPException) as exc:
        connection.close()
        logger.warning("Flower at %s is unreachable: %s", settings.FLOWER_URL, exc)
        return error(502, "flower_unreachable", "Flower is not reachable from the web server.")
    if upstream.status == 401:
        connection.close()
        logger.error("Flower refused FLOWER_BASIC_AUTH: the web's and Flower's differ")
        return error(502, "flower_refused", "Flower refused the web server's FLOWER_BASIC_AUTH.")
    response = StreamingHttpResponse(FlowerBody(connection, upstream), status=upstream.status)
    for name in RESPONSE_HEADERS:
        if value := upstream.getheader(name):
            response[name] = value
    return response


class FlowerBody:
    """Flower's body as it arrives; Django calls close() when the response ends, however."""

    def __init__(self, connection: HTTPConnection, upstream: HTTPResponse) -> None:
        self.connection = connection
        self.upstream = upstream

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self.upstream.read1(CHUNK_BYTES):
                yield chunk
        except (OSError, HTTPException) as exc:
            # The status has gone out: all that is left is to cut the body short.
            logger.warning("Flower's answer broke off: %s", exc)

    def close(self) -> None:
        self.connection.close()


def error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status)
