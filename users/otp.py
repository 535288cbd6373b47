"""One-time email codes: issue, spend and purge, each as a conditional update.

A code is stored only as an HMAC bound to its user and purpose. Every state change is an
UPDATE whose WHERE clause restates the rule it enforces, and its row count decides the
outcome, so concurrent requests cannot spend one code twice or dodge the attempt cap.
"""

import hmac
import secrets
from datetime import datetime, timedelta
from hashlib import sha256

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

# A module import because users.emails imports users.tasks, which imports this module.
from users import emails
from users.models import CustomUser, EmailCode

# Six random digits: the 20 bits of entropy ASVS 5.0 (6.5.4) asks for ("typically ... 6
# random digits is sufficient"), with guesses capped by OTP_MAX_ATTEMPTS.
CODE_DIGITS = 6
# At least a day, because the daily send cap counts the codes of the last day.
PURGE_CODES_AFTER = timedelta(days=1)


def otp_hash(*, user_id: int, purpose: str, code: str) -> str:
    """Return the keyed hash that stands for a code of this user and purpose."""
    message = f"{user_id}:{purpose}:{code}".encode()
    return hmac.new(settings.OTP_HMAC_KEY.encode(), message, sha256).hexdigest()


def otp_issue(*, user: CustomUser, purpose: str) -> bool:
    """Email a fresh code unless the cooldown or a send cap forbids it; return whether it did.

    The caps count this user's codes for this purpose, so nobody can flood a mailbox through
    the API whatever addresses they come from. The user row is locked so two quick requests
    cannot both pass the checks. SQLite ignores the lock, but its IMMEDIATE transactions
    serialise writers to the same effect.
    """
    now = timezone.now()
    with transaction.atomic():
        CustomUser.objects.select_for_update().only("pk").get(pk=user.pk)
        codes = EmailCode.objects.filter(user=user, purpose=purpose)
        if not _send_allowed(codes=codes, now=now):
            return False
        codes.filter(used_at=None, revoked_at=None).update(revoked_at=now)
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        EmailCode.objects.create(
            user=user,
            purpose=purpose,
            code_hash=otp_hash(user_id=user.pk, purpose=purpose, code=code),
            created_at=now,
            expires_at=now + settings.OTP_TTL,
        )
        emails.email_enqueue(recipient=user.email, **emails.code_email(code=code, purpose=purpose))
    return True


def otp_resend(*, email: str, purpose: str = EmailCode.Purpose.VERIFY_EMAIL) -> bool:
    """Send a new address-confirmation code if the address needs one; return whether it did."""
    user = CustomUser.objects.filter(
        email=CustomUser.objects.normalize_email(email), is_active=True, is_verified=False
    ).first()
    return user is not None and otp_issue(user=user, purpose=purpose)


def otp_verify(*, email: str, code: str, purpose: str) -> CustomUser | None:
    """Spend the open code if it matches; return its user, or None when it does not work.

    Every evaluated guess counts an attempt before the comparison, so parallel guesses are
    all counted and none is evaluated once the cap is reached.
    """
    now = timezone.now()
    user = CustomUser.objects.filter(email=CustomUser.objects.normalize_email(email)).first()
    open_code = _open_code(user=user, purpose=purpose, now=now) if user else None
    if open_code is None or not _attempt_count(code_id=open_code.pk, now=now):
        return None
    expected = otp_hash(user_id=user.pk, purpose=purpose, code=code)
    if not secrets.compare_digest(open_code.code_hash, expected):
        _burn_if_exhausted(code_id=open_code.pk, now=now)
        return None
    spent = EmailCode.objects.filter(pk=open_code.pk, used_at=None, revoked_at=None).update(
        used_at=now
    )
    return user if spent else None


def otp_purge_expired(*, older_than: timedelta = PURGE_CODES_AFTER) -> int:
    """Delete codes that expired longer ago than `older_than`; return how many went."""
    deleted, _ = EmailCode.objects.filter(expires_at__lt=timezone.now() - older_than).delete()
    return deleted


def _send_allowed(*, codes: QuerySet[EmailCode], now: datetime) -> bool:
    """Return whether the cooldown, the hourly cap and the daily cap all allow one more code."""
    sent = codes.aggregate(
        in_cooldown=Count("pk", filter=Q(created_at__gt=now - settings.OTP_RESEND_COOLDOWN)),
        in_hour=Count("pk", filter=Q(created_at__gt=now - timedelta(hours=1))),
        in_day=Count("pk", filter=Q(created_at__gt=now - timedelta(days=1))),
    )
    return (
        sent["in_cooldown"] == 0
        and sent["in_hour"] < settings.OTP_MAX_SENDS_PER_HOUR
        and sent["in_day"] < settings.OTP_MAX_SENDS_PER_DAY
    )


def _open_code(*, user: CustomUser, purpose: str, now: datetime) -> EmailCode | None:
    """Return the user's newest unspent, unexpired code for this purpose."""
    return (
        EmailCode.objects.filter(
            user=user, purpose=purpose, used_at=None, revoked_at=None, expires_at__gt=now
        )
        .order_by("-created_at")
        .first()
    )


def _attempt_count(*, code_id: int, now: datetime) -> bool:
    """Count one attempt at a code; return False if the code can no longer be tried."""
    return bool(
        EmailCode.objects.filter(
            pk=code_id,
            used_at=None,
            revoked_at=None,
            attempts__lt=settings.OTP_MAX_ATTEMPTS,
            expires_at__gt=now,
        ).update(attempts=F("attempts") + 1)
    )


def _burn_if_exhausted(*, code_id: int, now: datetime) -> None:
    """Revoke a code whose wrong attempts reached the cap, so the admin shows it as dead."""
    EmailCode.objects.filter(
        pk=code_id, used_at=None, revoked_at=None, attempts__gte=settings.OTP_MAX_ATTEMPTS
    ).update(revoked_at=now)
