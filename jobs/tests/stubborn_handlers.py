"""Job types that only tests run: handlers that never report progress and hold a CPU.

Tests add them to the registry for a while; a test worker process loads them with
`--include=jobs.tests.worker_with_stubborn_handlers`.
"""

import contextlib
import re
from typing import Any

from rest_framework import serializers

from jobs.handlers.base import JobHandler, Progress

# The sentence pattern word_count used: it backtracks through a run of dots from each of them,
# so 150,000 dots before a letter keep the regex engine (C code, holding the GIL) busy for
# many minutes.
CATASTROPHIC = re.compile(r"[.!?]+(?=\s|$)")


class NoParameters(serializers.Serializer):
    pass


class RegexHog(JobHandler):
    name = "test_regex_hog"
    description = "Run a catastrophic regular expression, without a progress report."
    Parameters = NoParameters

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return {"sentences": len(CATASTROPHIC.findall("." * 150_000 + "x"))}


class Spinner(JobHandler):
    name = "test_spinner"
    description = "Spin in Python for ever, without a progress report."
    Parameters = NoParameters

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        while True:
            sum(range(10_000))


class Stubborn(JobHandler):
    name = "test_stubborn"
    description = "Spin in Python and swallow every exception, the stop included."
    Parameters = NoParameters

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        while True:
            # What a handler must not do, on purpose. The loop is inside, so that the exception
            # is swallowed wherever it comes.
            with contextlib.suppress(BaseException):
                while True:
                    sum(range(10_000))


STUBBORN_HANDLERS = [RegexHog, Spinner, Stubborn]
