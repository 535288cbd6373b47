"""Account services: sign-up, address confirmation, passwords, and tokens."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import update_last_login
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.request import Request
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from users import emails
from users.models import CustomUser, EmailCode
from users.otp import otp_issue, otp_verify

logger = logging.getLogger(__name__)

# At most one "someone tried to register your address" email per address in this time, so
# registering a taken address over and over cannot flood its owner's mailbox.
REGISTRATION_WARNING_INTERVAL = timedelta(hours=1)


@transaction.atomic
def user_register(*, email: str, password: str) -> None:
    """Create an unverified account and email it a code, revealing nothing about old ones.

    An address that already has an account keeps its password: an unverified owner gets a
    fresh code (cooldown and caps permitting) and a verified one a warning. The password is
    hashed on every path so the response time does not tell the cases apart.
    """
    email = CustomUser.objects.normalize_email(email)
    password_hash = make_password(password)
    # get_or_create leans on the unique constraint, so two racing sign-ups make one account.
    user, created = CustomUser.objects.get_or_create(
        email=email, defaults={"password": password_hash}
    )
    if created or not user.is_verified:
        otp_issue(user=user, purpose=EmailCode.Purpose.VERIFY_EMAIL)
    elif _registration_warning_claim(user_id=user.pk, now=timezone.now()):
        emails.email_enqueue(recipient=user.email, **emails.registration_attempt_email())


@transaction.atomic
def user_verify_email(*, email: str, code: str) -> CustomUser | None:
    """Confirm an address with its emailed code; return the user, or None if the code fails."""
    user = otp_verify(email=email, code=code, purpose=EmailCode.Purpose.VERIFY_EMAIL)
    if user is not None:
        CustomUser.objects.filter(pk=user.pk, is_verified=False).update(is_verified=True)
        user.is_verified = True
    return user


def user_authenticate(*, request: Request | None, email: str, password: str) -> CustomUser | None:
    """Return the active account these credentials open, or None; count wrong passwords.

    After LOGIN_MAX_FAILURES wrong passwords in a row the account locks: even its right
    password fails, with the answer a wrong one gets, so nobody learns that the account
    exists; its owner is emailed once that resetting the password unlocks it.
    """
    email = CustomUser.objects.normalize_email(email)
    user = authenticate(request, email=email, password=password)
    if user is not None:
        if user.login_locked_at is not None:
            return None
        if user.failed_logins:
            CustomUser.objects.filter(pk=user.pk).update(failed_logins=0)
        return user
    account = CustomUser.objects.filter(email=email, is_active=True)
    account.update(failed_logins=F("failed_logins") + 1)
    # A conditional update: of racing failures, exactly one locks the account and emails.
    if account.filter(failed_logins__gte=settings.LOGIN_MAX_FAILURES, login_locked_at=None).update(
        login_locked_at=timezone.now()
    ):
        logger.warning("account locked after %d wrong passwords", settings.LOGIN_MAX_FAILURES)
        emails.email_enqueue(recipient=email, **emails.login_locked_email())
    return None


def user_login(*, user: CustomUser) -> dict[str, str]:
    """Issue an access and refresh token pair for an authenticated user."""
    tokens = _token_pair(user=user)
    if jwt_settings.UPDATE_LAST_LOGIN:
        update_last_login(None, user)
    return tokens


def user_logout(*, refresh: RefreshToken) -> None:
    """Revoke a refresh token so it can no longer be exchanged for access tokens."""
    refresh.blacklist()


@transaction.atomic
def user_password_change(*, user: CustomUser, password: str) -> dict[str, str]:
    """Set a new password, sign out every session, and issue a fresh pair for this client."""
    _password_set(user=user, password=password)
    return _token_pair(user=user)


def user_password_reset_request(*, email: str) -> bool:
    """Email a password reset code if the address has an active account; return whether it did."""
    user = CustomUser.objects.filter(
        email=CustomUser.objects.normalize_email(email), is_active=True
    ).first()
    return user is not None and otp_issue(user=user, purpose=EmailCode.Purpose.PASSWORD_RESET)


@transaction.atomic
def user_password_reset(*, email: str, code: str, password: str) -> CustomUser | None:
    """Set a new password with an emailed reset code; return the user, or None if it fails.

    The code proves control of the address, so the address counts as confirmed from now on.
    """
    user = otp_verify(email=email, code=code, purpose=EmailCode.Purpose.PASSWORD_RESET)
    if user is None or not user.is_active:
        return None
    user.is_verified = True
    _password_set(user=user, password=password, extra_fields=("is_verified",))
    return user


def user_tokens_revoke(*, user: CustomUser) -> int:
    """Blacklist every unexpired refresh token of the user's; return how many were open."""
    open_tokens = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    # ignore_conflicts: a token revoked meanwhile (logout, rotation) is already done.
    revoked = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in open_tokens], ignore_conflicts=True
    )
    return len(revoked)


def _password_set(*, user: CustomUser, password: str, extra_fields: tuple[str, ...] = ()) -> None:
    """Store a new password, revoke the user's tokens, and tell the owner by email.

    Access tokens carry a digest of the password hash (CHECK_REVOKE_TOKEN), so they stop
    working too; blacklisting makes the refresh tokens fail even before that check.
    """
    user.set_password(password)
    # A new password set by the owner also unlocks logging in.
    user.failed_logins, user.login_locked_at = 0, None
    user.save(update_fields=["password", "failed_logins", "login_locked_at", *extra_fields])
    user_tokens_revoke(user=user)
    emails.email_enqueue(recipient=user.email, **emails.password_changed_email())


def _token_pair(*, user: CustomUser) -> dict[str, str]:
    """Return a new access and refresh token for the user."""
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def _registration_warning_claim(*, user_id: int, now: datetime) -> bool:
    """Record a registration warning unless one went out lately; return whether to send it."""
    due = Q(registration_warned_at=None) | Q(
        registration_warned_at__lte=now - REGISTRATION_WARNING_INTERVAL
    )
    return bool(CustomUser.objects.filter(due, pk=user_id).update(registration_warned_at=now))
