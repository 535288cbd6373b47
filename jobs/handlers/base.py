"""What every job type provides, and the errors a handler may raise.

A handler knows nothing about Celery, HTTP or the ORM: it gets validated parameters and a
progress callback, and returns a JSON-serialisable dict.
"""

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from rest_framework import serializers

Progress = Callable[[int], None]


class PermanentJobError(Exception):
    """The job cannot succeed by trying again; it fails at once with this message."""


class RetryableJobError(Exception):
    """A passing failure; the job is tried again with backoff while retries remain."""


class JobInterrupted(Exception):
    """Raised in the handler when the job was cancelled or taken from this worker.

    It comes from the progress callback, or from the worker's watchdog wherever the handler
    is. Handlers must let it propagate: the worker then stops and writes nothing. One that
    swallows it has its process ended shortly after.
    """


class JobHandler:
    name: ClassVar[str]
    description: ClassVar[str]
    Parameters: ClassVar[type[serializers.Serializer]]
    queue: ClassVar[str] = "default"
    # Retry policy: a failed attempt is retried after about base * 2^(attempt-1) seconds,
    # with jitter, up to max_retries times. None takes the base from settings.
    max_retries: ClassVar[int] = 3
    retry_backoff_seconds: ClassVar[float | None] = None
    # The longest an attempt may run; a client may ask for less, never more.
    timeout_seconds: ClassVar[int] = 60
    # Whether an attempt stopped at the time limit is retried (within max_retries). Off by
    # default: most handlers take as long every time on the same input, so a retry would
    # only hold a worker as long again. Turn it on for a type whose time depends on something
    # passing, such as a slow remote service.
    retry_on_timeout: ClassVar[bool] = False
    # Quick jobs (well under a second each) published together share broker messages, up to
    # JOB_MESSAGE_BATCH_SIZE jobs of one queue per message, run in turn by one worker process:
    # for such jobs the broker's cost per message is most of the work. Long jobs must not, or
    # a bulk request's jobs would run one after another instead of side by side.
    quick: ClassVar[bool] = False
    # At most this many jobs of the type run (or are about to) at once, across all users;
    # None for no limit. For a type that strains something shared: the CPU, a remote service.
    concurrency_limit: ClassVar[int | None] = None
    # Days a finished job of the type is kept, by final status ("completed", "failed",
    # "cancelled"), where it should differ from JOB_RETENTION_*_DAYS: {"completed": 7} for a
    # type whose results are large and soon stale. Statuses it leaves out follow the settings.
    retention_days: ClassVar[Mapping[str, int]] = {}

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        raise NotImplementedError
