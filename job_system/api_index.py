"""`GET /api/`: the API's entry points and the docs' addresses, the first page a newcomer opens.

It reveals nothing that the schema does not already publish, so it needs no login.
"""

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

# Names in the index, by URL name: the routes a client starts from, in the order of use. Not
# the routes under /api/jobs/ (bulk, summary), which read like a job's /api/jobs/{id}/ to a
# client that follows URLs, as schemathesis' stateful tests do.
ENDPOINTS = {
    "register": "users:register",
    "verify_otp": "users:verify-otp",
    "resend_otp": "users:resend-otp",
    "login": "users:login",
    "token_refresh": "users:token-refresh",
    "logout": "users:logout",
    "me": "users:me",
    "password_change": "users:password-change",
    "password_reset": "users:password-reset",
    "password_reset_confirm": "users:password-reset-confirm",
    "login_unlock": "users:login-unlock",
    "jobs": "job-list",
    "job_types": "job-types",
    "job_results": "job-result-list",
    "webhooks": "webhook-list",
    "schedules": "schedule-list",
    "health": "health",
    "health_live": "health-live",
    "health_ready": "health-ready",
}
DOCS = {"swagger_ui": "swagger-ui", "redoc": "redoc", "schema": "schema"}


API_INDEX = inline_serializer(
    "ApiIndex",
    {
        "title": serializers.CharField(),
        "version": serializers.CharField(),
        "endpoints": inline_serializer(
            "ApiIndexEndpoints", {name: serializers.URLField() for name in ENDPOINTS}
        ),
        "docs": inline_serializer("ApiIndexDocs", {name: serializers.URLField() for name in DOCS}),
    },
)


class ApiIndexView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["index"],
        operation_id="api_index",
        summary="List the API's entry points and the docs' addresses",
        description="Absolute URLs, by name. The routes under them, such as "
        "`/api/jobs/{id}/`, are in the schema.",
        responses=API_INDEX,
    )
    def get(self, request: Request) -> Response:
        def urls(names: dict[str, str]) -> dict[str, str]:
            return {name: reverse(url_name, request=request) for name, url_name in names.items()}

        return Response(
            {
                "title": settings.SPECTACULAR_SETTINGS["TITLE"],
                "version": settings.SPECTACULAR_SETTINGS["VERSION"],
                "endpoints": urls(ENDPOINTS),
                "docs": urls(DOCS),
            }
        )
