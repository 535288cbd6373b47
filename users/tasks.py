"""Celery entry points for accounts: sending email and periodic clean-up."""

from smtplib import SMTPException

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.core.management import call_command

# Module imports on both sides: users.emails imports this module to enqueue send_email.
from users import otp


@shared_task(
    name="users.tasks.send_email",
    autoretry_for=(SMTPException, OSError),
    retry_backoff=True,
    max_retries=5,
)
def send_email(recipient: str, subject: str, body: str) -> None:
    """Send one plain-text email from the default sender."""
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [recipient])


@shared_task(name="users.tasks.purge_expired_codes")
def purge_expired_codes() -> int:
    """Delete one-time codes that expired more than a day ago."""
    return otp.otp_purge_expired()


@shared_task(name="users.tasks.flush_expired_tokens")
def flush_expired_tokens() -> None:
    """Delete expired refresh tokens from simplejwt's outstanding and blacklist tables."""
    call_command("flushexpiredtokens")
