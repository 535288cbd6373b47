"""A job that only waits, for testing long-running jobs, progress and cancellation."""

import time
from typing import Any

from rest_framework import serializers

from jobs.handlers import register
from jobs.handlers.base import JobHandler, Progress

# Short steps bound how long a cancelled job keeps its worker busy.
STEP_SECONDS = 0.2


class SleepParameters(serializers.Serializer):
    seconds = serializers.FloatField(
        min_value=0, max_value=3600, help_text="How long to sleep, in seconds (at most an hour)."
    )


@register
class Sleep(JobHandler):
    name = "sleep"
    description = "Wait for the given number of seconds, reporting progress as it goes."
    Parameters = SleepParameters
    queue = "long"
    # Room for the longest sleep the parameters allow.
    timeout_seconds = 3600 + 60

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        seconds: float = params["seconds"]
        # monotonic, so a wall-clock change cannot stretch or cut the sleep.
        started = time.monotonic()
        deadline = started + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, STEP_SECONDS))
            progress(min(100, int((time.monotonic() - started) * 100 / seconds)))
        return {"slept_seconds": round(time.monotonic() - started, 3)}
