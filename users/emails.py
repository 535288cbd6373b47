"""The emails accounts send, and the one way to send them: a Celery task after commit."""

from django.conf import settings
from django.db import transaction

# A module import because users.tasks imports the services that import this module.
from users import tasks
from users.models import EmailCode

# What each kind of code is for, as the email's subject and its opening line.
CODE_EMAILS = {
    EmailCode.Purpose.VERIFY_EMAIL: (
        "Your confirmation code",
        "Here is the code to confirm your email address:",
    ),
    EmailCode.Purpose.PASSWORD_RESET: (
        "Your password reset code",
        "Here is the code to reset your password:",
    ),
}


def email_enqueue(*, recipient: str, subject: str, body: str) -> None:
    """Send an email from a worker once the current transaction commits."""
    # argsrepr keeps the body, which may hold a code, out of worker logs and Flower.
    transaction.on_commit(
        lambda: tasks.send_email.apply_async(
            args=(recipient, subject, body), argsrepr=repr((recipient, subject, "…"))
        )
    )


def code_email(*, code: str, purpose: str) -> dict[str, str]:
    """Return the subject and body of the email that carries a code for `purpose`."""
    subject, opening = CODE_EMAILS[purpose]
    minutes = int(settings.OTP_TTL.total_seconds() // 60)
    body = (
        f"{opening}\n\n"
        f"{code}\n\n"
        f"It expires in {minutes} minutes and works once. If you did not ask for it, "
        "you can ignore this email: nothing has changed on your account.\n"
    )
    return {"subject": subject, "body": body}


def password_changed_email() -> dict[str, str]:
    """Return the email that tells an account's owner their password was just changed."""
    body = (
        "The password of your account was just changed, and every device signed in with the "
        "old one has been signed out.\n\n"
        'If it was not you, reset your password at once with the "forgot password" option, '
        "which emails a code to this address.\n"
    )
    return {"subject": "Your password was changed", "body": body}


def registration_attempt_email() -> dict[str, str]:
    """Return the email that tells an account's owner someone tried to register it again."""
    body = (
        "Someone just tried to create an account with this email address, but you already "
        "have one.\n\n"
        "If it was you, log in with your password instead. If it was not, you can ignore "
        "this email: nothing has changed on your account.\n"
    )
    return {"subject": "Someone tried to register with your email address", "body": body}


def login_locked_email() -> dict[str, str]:
    """Return the email that tells an account's owner that logging in is locked."""
    body = (
        "Someone entered a wrong password for your account too many times in a row, so "
        "logging in with a password is locked, the right one included. Devices already "
        "signed in stay signed in.\n\n"
        'To unlock it, reset your password with the "forgot password" option, which emails '
        "a code to this address.\n"
    )
    return {"subject": "Logging in to your account is locked", "body": body}
