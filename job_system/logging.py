"""Log formatting, and the job every log line is about.

While a service handles a job (a worker running it, a web request creating, cancelling or
retrying it), a context variable holds the job's id, type and attempt, and JobContextFilter
copies them onto every record emitted meanwhile: ours, Django's and other libraries' alike.
The filter sits on the handler, so it sees records from every logger that reaches it.

LOG_FORMAT=json writes one JSON object per line for log collectors; `plain` is for people.
"""

import functools
import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

JOB_FIELDS = ("job_id", "job_type", "attempt")

_job_fields: ContextVar[dict[str, Any] | None] = ContextVar("job_log_fields", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def job_log_scope(func: Callable[P, R]) -> Callable[P, R]:
    """Run a service with its job's fields on every log line, from its `job` or `job_id`.

    The fields are dropped when the service returns, so they never leak into the next task
    a worker process runs, or the next request a web thread answers.
    """

    @functools.wraps(func)
    def in_scope(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _job_fields.set(_fields_from(kwargs))
        try:
            return func(*args, **kwargs)
        finally:
            _job_fields.reset(token)

    return in_scope


def bind_job(job: Any) -> None:
    """Log the rest of the current scope about this job; a no-op outside a scope."""
    if _job_fields.get() is not None:
        _job_fields.set(_fields_of(job))


def current_job_fields() -> dict[str, Any]:
    return dict(_job_fields.get() or {})


def _fields_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("job") is not None:
        return _fields_of(kwargs["job"])
    if kwargs.get("job_id") is not None:
        # Before the claim only the id is known; the rest comes with bind_job().
        return {"job_id": str(kwargs["job_id"]), "job_type": None, "attempt": None}
    return {}


def _fields_of(job: Any) -> dict[str, Any]:
    return {"job_id": str(job.pk), "job_type": job.job_type, "attempt": job.attempts}


class JobContextFilter(logging.Filter):
    """Add the current job's fields to a record; fields the caller passed in `extra` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_job_fields.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Attributes every LogRecord has; anything else on a record came from `extra` or a filter.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, extras, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold (a UUID, a datetime) is still logged.
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """Django's usual line, with the job's fields appended when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        job = [
            f"{key}={getattr(record, key)}"
            for key in JOB_FIELDS
            if getattr(record, key, None) is not None
        ]
        return f"{line} [{' '.join(job)}]" if job else line


class QuietBeatSends(logging.Filter):
    """Drop Beat's "Sending due task" line for the given tasks; keep all else it logs.

    Beat logs that line at INFO for every send, and the dispatcher's, every second, buried
    everything else. The tasks named here log what they did themselves; Beat's errors, its
    start and its other sends still show.
    """

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        sending = record.levelno == logging.INFO and str(record.msg).startswith(
            "Scheduler: Sending due task"
        )
        return not (sending and isinstance(record.args, tuple) and record.args[-1] in self.tasks)
