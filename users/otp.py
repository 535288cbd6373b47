"""One-time email codes: issue, spend and purge, each as a conditional update.

A code is stored only as an HMAC bound to its user and purpose. Every state change is an
UPDATE whose WHERE clause restates the rule it enforces, and its row count decides the
outcome, so concurrent requests cannot spend one code twice or dodge the attempt cap.

Two kinds of code:
- Short codes, 6 digits, confirm an address. Wrong guesses are capped per code, and sends
  per address, because 20 bits can be guessed. Each sign-up gets a code of its own, bound to
  the password it chose; a newer sign-up does not revoke an older one's code.
- Long codes, 16 characters (80 bits), reset a password or unlock logging in. They cannot be
  guessed, so wrong guesses never use them up: someone guessing at the owner's code cannot
  spend it for them. At most one is open per address and purpose, and asking again while it
  is open sends nothing: the owner already has it. That bounds the emails an attacker can
  cause to one per code lifetime, so no send cap is needed, and none can be exhausted to keep
  the owner from getting a code.
"""

import hmac
import re
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
SHORT_CODE = re.compile(rf"\d{{{CODE_DIGITS}}}")
# Crockford's base32: no I, L, O or U, so a code read aloud or retyped is not misread.
LONG_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LONG_CODE_LENGTH = 16
LONG_CODE_GROUP = 4
# What people type for the letters the alphabet leaves out.
_LONG_CODE_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
LONG_CODE_PURPOSES = frozenset({EmailCode.Purpose.PASSWORD_RESET, EmailCode.Purpose.LOGIN_UNLOCK})
# At least a day, because the daily send cap counts the codes of the last day.
PURGE_CODES_AFTER = timedelta(days=1)
# Open codes compared per guess, at most: sends are capped, so only a few can be open at once.
MAX_OPEN_CODES = 10


def is_long(purpose: str) -> bool:
    return purpose in LONG_CODE_PURPOSES


def code_lifetime(purpose: str) -> timedelta:
    return settings.LONG_CODE_TTL if is_long(purpose) else settings.OTP_TTL


def code_canonical(*, purpose: str, text: str) -> str | None:
    """Return the code as it is hashed, or None if `text` cannot be a code for `purpose`.

    Long codes may be typed in any case, with or without their dashes and spaces.
    """
    if not is_long(purpose):
        return text if SHORT_CODE.fullmatch(text) else None
    code = re.sub(r"[\s-]", "", text.upper()).translate(_LONG_CODE_LOOKALIKES)
    if len(code) != LONG_CODE_LENGTH or set(code) - set(LONG_CODE_ALPHABET):
        return None
    return code


def otp_hash(*, user_id: int, purpose: str, code: str) -> str:
    """Return the keyed hash that stands for a code of this user and purpose."""
    message = f"{user_id}:{purpose}:{code}".encode()
    return hmac.new(settings.OTP_HMAC_KEY.encode(), message, sha256).hexdigest()


def otp_issue(*, user: CustomUser, purpose: str, password_hash: str = "") -> bool:
    """Email a fresh code unless the rules for `purpose` forbid it now; return whether it did.

    Short codes keep a cooldown and per-address caps; long codes are not sent while one is
    open. The user row is locked so two quick requests cannot both pass the checks. SQLite
    ignores the lock, but its IMMEDIATE transactions serialise writers to the same effect.
    """
    now = timezone.now()
    with transaction.atomic():
        CustomUser.objects.select_for_update().only("pk").get(pk=user.pk)
        codes = EmailCode.objects.filter(user=user, purpose=purpose)
        if is_long(purpose):
            if _open_codes(codes, now=now).exists():
                return False
        elif not _send_allowed(codes=codes, now=now):
            return False
        if purpose != EmailCode.Purpose.VERIFY_EMAIL:
            # Every sign-up's code stands on its own; other codes replace their predecessor.
            codes.filter(used_at=None, revoked_at=None).update(revoked_at=now)
        code = _new_code(purpose)
        EmailCode.objects.create(
            user=user,
            purpose=purpose,
            code_hash=otp_hash(user_id=user.pk, purpose=purpose, code=code),
            created_at=now,
            expires_at=now + code_lifetime(purpose),
            password_hash=password_hash,
        )
        email = emails.code_email(
            code=_displayed(code, purpose),
            purpose=purpose,
            sent_at=now,
            lifetime=code_lifetime(purpose),
        )
        emails.email_enqueue(recipient=user.email, **email)
    return True


def otp_verify(*, email: str, code: str, purpose: str) -> EmailCode | None:
    """Spend the open code that matches; return it, its user loaded, or None.

    Every evaluated guess at a short code counts an attempt against each open code before the
    comparison, so parallel guesses are all counted and none is evaluated past the cap.
    """
    now = timezone.now()
    canonical = code_canonical(purpose=purpose, text=code)
    user = CustomUser.objects.filter(email=CustomUser.objects.normalize_email(email)).first()
    if user is None or canonical is None:
        return None
    candidates = list(_open_codes(user.email_codes.filter(purpose=purpose), now=now))
    if not is_long(purpose):
        candidates = [c for c in candidates if _attempt_count(code_id=c.pk, now=now)]
    expected = otp_hash(user_id=user.pk, purpose=purpose, code=canonical)
    # Every candidate is compared, so the time taken does not tell which one matched.
    matches = [c for c in candidates if secrets.compare_digest(c.code_hash, expected)]
    if not matches:
        if not is_long(purpose):
            for candidate in candidates:
                _burn_if_exhausted(code_id=candidate.pk)
        return None
    spent = matches[0]
    if not EmailCode.objects.filter(pk=spent.pk, used_at=None, revoked_at=None).update(used_at=now):
        return None
    spent.user = user
    return spent


def otp_revoke_open(*, user: CustomUser, purpose: str) -> int:
    """Revoke the user's open codes for `purpose` (their job is done); return how many."""
    return EmailCode.objects.filter(
        user=user, purpose=purpose, used_at=None, revoked_at=None
    ).update(revoked_at=timezone.now())


def otp_purge_expired(*, older_than: timedelta = PURGE_CODES_AFTER) -> int:
    """Delete codes that expired longer ago than `older_than`; return how many went."""
    deleted, _ = EmailCode.objects.filter(expires_at__lt=timezone.now() - older_than).delete()
    return deleted


def _new_code(purpose: str) -> str:
    if is_long(purpose):
        return "".join(secrets.choice(LONG_CODE_ALPHABET) for _ in range(LONG_CODE_LENGTH))
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _displayed(code: str, purpose: str) -> str:
    """A long code in dashed groups of four, easier to read and retype; a short one as it is."""
    if not is_long(purpose):
        return code
    return "-".join(code[i : i + LONG_CODE_GROUP] for i in range(0, len(code), LONG_CODE_GROUP))


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


def _open_codes(codes: QuerySet[EmailCode], *, now: datetime) -> QuerySet[EmailCode]:
    """The unspent, unexpired codes among `codes`, newest first."""
    return codes.filter(used_at=None, revoked_at=None, expires_at__gt=now).order_by("-created_at")[
        :MAX_OPEN_CODES
    ]


def _attempt_count(*, code_id: int, now: datetime) -> bool:
    """Count one attempt at a short code; return False if it can no longer be tried."""
    return bool(
        EmailCode.objects.filter(
            pk=code_id,
            used_at=None,
            revoked_at=None,
            attempts__lt=settings.OTP_MAX_ATTEMPTS,
            expires_at__gt=now,
        ).update(attempts=F("attempts") + 1)
    )


def _burn_if_exhausted(*, code_id: int) -> None:
    """Revoke a code whose wrong attempts reached the cap, so the admin shows it as dead."""
    EmailCode.objects.filter(
        pk=code_id, used_at=None, revoked_at=None, attempts__gte=settings.OTP_MAX_ATTEMPTS
    ).update(revoked_at=timezone.now())
