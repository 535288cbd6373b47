"""A job that always fails, so clients can test how they handle failures and retries."""

from typing import Any

from rest_framework import serializers

from jobs.handlers import register
from jobs.handlers.base import JobHandler, PermanentJobError, Progress, RetryableJobError


class FailParameters(serializers.Serializer):
    message = serializers.CharField(
        required=False,
        default="This job failed on purpose.",
        max_length=1000,
        help_text="The error message the job fails with.",
    )
    retryable = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Fail with a passing error, so the job is retried before it finally fails.",
    )


@register
class Fail(JobHandler):
    name = "fail"
    description = "Always fail with the given message, to test how a client handles failed jobs."
    Parameters = FailParameters
    # Clients use this type to watch retries happen; a short backoff keeps that quick.
    retry_backoff_seconds = 0.5

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        if params["retryable"]:
            raise RetryableJobError(params["message"])
        raise PermanentJobError(params["message"])
