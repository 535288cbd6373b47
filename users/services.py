"""Account services: sign-up, address confirmation, passwords, and tokens."""

from datetime import datetime, timedelta

from django.contrib.auth import authenticate
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import update_last_login
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from users import emails
from users.login_policy import (
    login_allowed,
    login_attempt_count,
    login_failure_record,
    login_success_record,
)
from users.models import CustomUser, EmailCode
from users.otp import otp_issue, otp_revoke_open, otp_verify

# At most one "someone tried to register your address" email per address in this time, so
# registering a taken address over and over cannot flood its owner's mailbox.
REGISTRATION_WARNING_INTERVAL = timedelta(hours=1)


@transaction.atomic
def user_register(*, email: str, password: str) -> None:
    """Record a sign-up and email it a code, revealing nothing about an existing account.

    A verified owner gets a warning instead. For an address still unconfirmed, each sign-up
    gets a code bound to its own password: the code that is confirmed decides the account's
    password, so someone who signed up first with the owner's address cannot keep their
    password on the owner's account. The password is hashed on every path, so the response
    time does not tell the cases apart.
    """
    email = CustomUser.objects.normalize_email(email)
    password_hash = make_password(password)
    # get_or_create leans on the unique constraint, so two racing sign-ups make one account.
    user, created = CustomUser.objects.get_or_create(
        email=email, defaults={"password": password_hash}
    )
    if created or not user.is_verified:
        _signup_code_send(user=user, password_hash=password_hash)
    elif _registration_warning_claim(user_id=user.pk, now=timezone.now()):
        emails.email_enqueue(recipient=user.email, **emails.registration_attempt_email())


@transaction.atomic
def user_signup_code_resend(*, email: str, password: str) -> bool:
    """Email a new code for the sign-up made with this password, if the address needs one.

    Like signing up again: the new code is bound to the password sent, so it cannot confirm
    anybody else's sign-up. Return whether a code went out.
    """
    password_hash = make_password(password)
    user = CustomUser.objects.filter(
        email=CustomUser.objects.normalize_email(email), is_active=True, is_verified=False
    ).first()
    return user is not None and _signup_code_send(user=user, password_hash=password_hash)


@transaction.atomic
def user_verify_email(*, email: str, code: str) -> CustomUser | None:
    """Confirm an address with a sign-up's code; return the user, or None if the code fails.

    The account takes the password of the sign-up whose code this is, and the codes of any
    other sign-up stop working.
    """
    confirmed = otp_verify(email=email, code=code, purpose=EmailCode.Purpose.VERIFY_EMAIL)
    if confirmed is None:
        return None
    user = confirmed.user
    changes = {"is_verified": True}
    if confirmed.password_hash:  # Codes sent before sign-ups carried a password have none.
        changes["password"] = confirmed.password_hash
    if not CustomUser.objects.filter(pk=user.pk, is_verified=False).update(**changes):
        return None  # Confirmed meanwhile (another code, or a password reset).
    otp_revoke_open(user=user, purpose=EmailCode.Purpose.VERIFY_EMAIL)
    user.refresh_from_db()
    return user


def user_authenticate(
    *, request: HttpRequest, email: str, password: str, unlock_code: str = ""
) -> CustomUser | None:
    """Return the active account these credentials open, or None; apply the login policy.

    users.login_policy: raises LoginThrottled when the client's address tried too often;
    counts wrong passwords and locks the account at LOGIN_MAX_FAILURES, after which only the
    password with an emailed unlock code opens it. Every refusal gets the same answer.
    """
    login_attempt_count(request=request)
    email = CustomUser.objects.normalize_email(email)
    # authenticate() hashes the password for unknown addresses too, so timing tells nothing.
    user = authenticate(request, email=email, password=password)
    if user is None:
        login_failure_record(email=email)
        return None
    if not login_allowed(user=user, unlock_code=unlock_code):
        return None
    login_success_record(user=user)
    return user


def user_login_unlock_request(*, email: str) -> bool:
    """Email an unlock code to a locked account, unless one is open; return whether it did."""
    user = CustomUser.objects.filter(
        email=CustomUser.objects.normalize_email(email),
        is_active=True,
        login_locked_at__isnull=False,
    ).first()
    return user is not None and otp_issue(user=user, purpose=EmailCode.Purpose.LOGIN_UNLOCK)


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

    The code proves control of the address, so the address counts as confirmed from now on,
    and the codes of unfinished sign-ups stop working.
    """
    reset = otp_verify(email=email, code=code, purpose=EmailCode.Purpose.PASSWORD_RESET)
    if reset is None or not reset.user.is_active:
        return None
    user = reset.user
    user.is_verified = True
    _password_set(user=user, password=password, extra_fields=("is_verified",))
    otp_revoke_open(user=user, purpose=EmailCode.Purpose.VERIFY_EMAIL)
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


def _signup_code_send(*, user: CustomUser, password_hash: str) -> bool:
    """Email a code bound to this sign-up's password; return whether the send rules let it.

    Until the address is confirmed, the newest sign-up's password is the account's, so that
    its author is told to confirm (403 `email_not_verified`) rather than that it is wrong.
    """
    purpose = EmailCode.Purpose.VERIFY_EMAIL
    if not otp_issue(user=user, purpose=purpose, password_hash=password_hash):
        return False
    CustomUser.objects.filter(pk=user.pk, is_verified=False).update(password=password_hash)
    return True


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
