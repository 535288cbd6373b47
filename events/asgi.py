"""The events process's ASGI entry point: `uvicorn events.asgi:application` (see Procfile)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "job_system.settings")
django.setup(set_prefix=False)

from events.stream import application  # noqa: E402 - needs the settings and apps loaded.

__all__ = ["application"]
