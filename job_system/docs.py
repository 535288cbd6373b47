"""The API's documentation: the OpenAPI schema, Swagger UI and ReDoc, every byte from here.

The UIs' code comes from drf-spectacular-sidecar, and ReDoc's Google Fonts links are dropped
(templates/drf_spectacular/redoc.html). ReDoc still draws a "by Redocly" logo from its CDN in
its menu, with no setting to stop it; so the pages carry a Content-Security-Policy that lets
the browser fetch nothing from another host (ReDoc hides the logo when it does not load). A
page that works here then works on a network without internet, and tells no one it was read.
"""

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

# Inline scripts and styles: drf-spectacular's templates and both UIs use them. ReDoc runs
# its search in a worker made from a blob.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ]
)


def same_origin_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Have the browser fetch nothing for the page from another host."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return wrapped


swagger_ui = same_origin_only(SpectacularSwaggerView.as_view(url_name="schema"))
redoc = same_origin_only(SpectacularRedocView.as_view(url_name="schema"))

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", swagger_ui, name="swagger-ui"),
    path("api/schema/redoc/", redoc, name="redoc"),
    # Addresses used by the original implementation of this API.
    path("api/docs/", swagger_ui, name="swagger-ui-legacy"),
    path("api/redoc/", redoc, name="redoc-legacy"),
]
