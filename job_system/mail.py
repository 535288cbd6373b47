"""Development email: every message in the log as one record, instead of printed.

Django's console backend prints to standard output, which a Celery worker (where our emails
are sent) redirects to its log a write at a time, at WARNING: each message arrived as a
record tagged `WARNING celery.redirected`, and its closing rule as another. One INFO record
per message keeps it in one block in plain logs, and in one object in JSON logs.
"""

import logging
from collections.abc import Sequence

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

logger = logging.getLogger(__name__)


class ConsoleEmailBackend(BaseEmailBackend):
    """Log each message whole, headers and body, as one INFO record."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        for message in email_messages:
            mime = message.message()
            charset = mime.get_charset()
            text = mime.as_bytes().decode(charset.get_output_charset() if charset else "utf-8")
            logger.info("email to %s\n%s", ", ".join(message.recipients()), text)
        return len(email_messages)
