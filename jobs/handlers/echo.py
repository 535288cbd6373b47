from typing import Any

from rest_framework import serializers

from jobs.handlers import register
from jobs.handlers.base import JobHandler, Progress


class EchoParameters(serializers.Serializer):
    message = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=10_000,
        help_text="Text returned unchanged.",
    )
    # null too: it is a JSON value, and the one a job stored without `data` shows.
    data = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Any JSON value, null included, returned unchanged.",
    )


@register
class Echo(JobHandler):
    name = "echo"
    description = "Return the given message and data unchanged. Handy for trying the API."
    Parameters = EchoParameters
    quick = True

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return {"message": params["message"], "data": params["data"]}
