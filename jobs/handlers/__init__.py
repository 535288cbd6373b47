"""The registry of job types.

Each module in this package defines one job type and decorates its handler with
`@register`. Modules are imported when the app loads, so adding a type is one new file.
"""

import importlib
import pkgutil

from jobs.handlers.base import JobHandler

_handlers: dict[str, JobHandler] = {}

DEFAULT_JOB_TYPE = "echo"


def register(handler_class: type[JobHandler]) -> type[JobHandler]:
    name = handler_class.name
    if name in _handlers:
        raise ImproperlyRegistered(f"Job type {name!r} is registered twice.")
    _handlers[name] = handler_class()
    return handler_class


def get(name: str) -> JobHandler:
    """Return the handler for a job type; KeyError if there is none."""
    return _handlers[name]


def find(name: str) -> JobHandler | None:
    """Return the handler for a job type, or None for a type this release does not have."""
    return _handlers.get(name)


def names() -> list[str]:
    return sorted(_handlers)


def all_handlers() -> list[JobHandler]:
    return [_handlers[name] for name in names()]


def autodiscover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


class ImproperlyRegistered(Exception):
    pass
