"""The emails accounts send, and the one way to send them: a Celery task after commit."""

from datetime import datetime, timedelta

from django.db import transaction

# A module import because users.tasks imports the services that import this module.
from users import tasks
from users.models import EmailCode

# What each kind of code is for: the email's subject, its opening line, and what follows.
CODE_EMAILS = {
    EmailCode.Purpose.VERIFY_EMAIL: (
        "Your confirmation code",
        "Here is the code to confirm your email address for the sign-up made at {sent_at}:",
        "Confirming it finishes that sign-up, with the password chosen in it. If you signed up "
        "more than once, use the code from your last sign-up. If you did not sign up, ignore "
        "this email: nothing happens without the code.",
    ),
    EmailCode.Purpose.PASSWORD_RESET: (
        "Your password reset code",
        "Here is the code to reset your password:",
        "Wrong guesses by anyone else do not use it up, and asking for another code while this "
        "one works sends nothing new. If you did not ask for it, ignore this email: nothing "
        "has changed on your account.",
    ),
    EmailCode.Purpose.LOGIN_UNLOCK: (
        "Your code to unlock logging in",
        "Someone entered a wrong password for your account many times in a row, so your "
        "password alone no longer logs in. To log in, send your password together with this "
        "unlock code (`unlock_code` at /api/login/):",
        "Wrong guesses by anyone else do not use it up, and without it your password alone "
        "does not let anyone in. Devices already signed in stay signed in. Resetting your "
        "password unlocks logging in too.",
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


def code_email(
    *, code: str, purpose: str, sent_at: datetime, lifetime: timedelta
) -> dict[str, str]:
    """Return the subject and body of the email that carries a code for `purpose`."""
    subject, opening, note = CODE_EMAILS[purpose]
    minutes = int(lifetime.total_seconds() // 60)
    opening = opening.format(sent_at=sent_at.strftime("%Y-%m-%d %H:%M UTC"))
    body = f"{opening}\n\n{code}\n\nIt expires in {minutes} minutes and works once. {note}\n"
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
