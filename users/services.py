"""Account services: registering, confirming addresses, and issuing and revoking tokens."""

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import update_last_login
from django.db import transaction
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from users import emails
from users.models import CustomUser, EmailCode
from users.otp import otp_issue, otp_verify


@transaction.atomic
def user_register(*, email: str, password: str) -> None:
    """Create an unverified account and email it a code, revealing nothing about old ones.

    An address that already has an account keeps its password: an unverified owner gets a
    fresh code (cooldown permitting) and a verified one a warning. The password is hashed on
    every path so the response time does not tell the cases apart.
    """
    email = CustomUser.objects.normalize_email(email)
    password_hash = make_password(password)
    # get_or_create leans on the unique constraint, so two racing sign-ups make one account.
    user, created = CustomUser.objects.get_or_create(
        email=email, defaults={"password": password_hash}
    )
    if created or not user.is_verified:
        otp_issue(user=user, purpose=EmailCode.Purpose.VERIFY_EMAIL)
    else:
        emails.email_enqueue(recipient=user.email, **emails.registration_attempt_email())


@transaction.atomic
def user_verify_email(*, email: str, code: str) -> CustomUser | None:
    """Confirm an address with its emailed code; return the user, or None if the code fails."""
    user = otp_verify(email=email, code=code, purpose=EmailCode.Purpose.VERIFY_EMAIL)
    if user is not None:
        CustomUser.objects.filter(pk=user.pk, is_verified=False).update(is_verified=True)
        user.is_verified = True
    return user


def user_login(*, user: CustomUser) -> dict[str, str]:
    """Issue an access and refresh token pair for an authenticated user."""
    refresh = RefreshToken.for_user(user)
    if jwt_settings.UPDATE_LAST_LOGIN:
        update_last_login(None, user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def user_logout(*, refresh: RefreshToken) -> None:
    """Revoke a refresh token so it can no longer be exchanged for access tokens."""
    refresh.blacklist()
