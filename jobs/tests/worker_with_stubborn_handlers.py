"""Imported by test workers (`celery worker --include=...`): adds the stubborn job types."""

from jobs.handlers import register
from jobs.tests.stubborn_handlers import STUBBORN_HANDLERS

for handler_class in STUBBORN_HANDLERS:
    register(handler_class)
