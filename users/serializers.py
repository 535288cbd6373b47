"""Account request validation and response shapes; writing is left to the services."""

import re

from django.conf import settings
from django.contrib.auth.password_validation import (
    MinimumLengthValidator,
    NumericPasswordValidator,
    get_default_password_validators,
    validate_password,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import APIException, AuthenticationFailed, ErrorDetail
from rest_framework.fields import get_error_detail
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import (
    TokenRefreshSerializer as SimpleJWTTokenRefreshSerializer,
)
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from job_system.openapi import NON_EMPTY_TEXT
from job_system.serializers import StrictTypesMixin
from users.models import CustomUser
from users.otp import CODE_DIGITS

CODE_PATTERN = re.compile(rf"\d{{{CODE_DIGITS}}}")
NEW_PASSWORD_MAX_LENGTH = 128
# A string without NUL that has a character other than an ASCII digit.
NOT_ONLY_DIGITS = r"^[^\u0000]*[^\u00000-9][^\u0000]*$"


class InvalidCredentials(AuthenticationFailed):
    default_detail = "Invalid email or password."
    default_code = "invalid_credentials"


def error_with_code(exc_class: type[APIException]) -> APIException:
    """Build `exc_class` so its body carries the code beside the detail."""
    code = exc_class.default_code
    return exc_class({"detail": exc_class.default_detail, "code": code}, code)


def invalid_code_error(*, resend_route: str = "users:resend-otp") -> serializers.ValidationError:
    """Build the one error every unusable code gets, whatever the reason."""
    minutes = int(settings.OTP_TTL.total_seconds() // 60)
    message = (
        f"The code is invalid or has expired. Codes last {minutes} minutes, work once, and "
        f"stop working after {settings.OTP_MAX_ATTEMPTS} wrong tries; ask for a new one at "
        f"{reverse(resend_route)}."
    )
    return serializers.ValidationError({"otp": [message]}, code="invalid_code")


def normalized_email(value: str) -> str:
    """Return the address the way accounts store it."""
    return CustomUser.objects.normalize_email(value)


def password_field(field_class=serializers.CharField, **kwargs) -> serializers.CharField:
    """Return a field that takes a password exactly as typed and never echoes it."""
    return field_class(
        write_only=True, trim_whitespace=False, style={"input_type": "password"}, **kwargs
    )


def new_password_schema() -> dict:
    """Describe a new password by the rules of Django's validators that a schema can state.

    Not being common, or like the email address, is left to the 400.
    """
    validators = get_default_password_validators()
    min_length = max(
        (v.min_length for v in validators if isinstance(v, MinimumLengthValidator)), default=1
    )
    numeric_allowed = not any(isinstance(v, NumericPasswordValidator) for v in validators)
    return {
        "type": "string",
        "minLength": min_length,
        "maxLength": NEW_PASSWORD_MAX_LENGTH,
        "pattern": NON_EMPTY_TEXT if numeric_allowed else NOT_ONLY_DIGITS,
        "description": f"At least {min_length} characters, not all digits, not a common "
        "password, and not like the email address.",
    }


@extend_schema_field(new_password_schema())
class NewPasswordField(serializers.CharField):
    """A password being set, which Django's password validators check."""


def new_password_field() -> serializers.CharField:
    return password_field(NewPasswordField, max_length=NEW_PASSWORD_MAX_LENGTH)


def password_problems(password: str, *, user: CustomUser) -> list[ErrorDetail]:
    """Return what Django's password validators hold against a password; empty if nothing."""
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        return get_error_detail(exc)
    return []


class RegisterSerializer(StrictTypesMixin, serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = new_password_field()

    def validate_email(self, value: str) -> str:
        return normalized_email(value)

    def validate(self, attrs: dict) -> dict:
        # An unsaved user lets the similarity validator compare the password with the address.
        if problems := password_problems(attrs["password"], user=CustomUser(email=attrs["email"])):
            raise serializers.ValidationError({"password": problems})
        return attrs


class RegisterResponseSerializer(serializers.Serializer):
    email = serializers.EmailField()
    detail = serializers.CharField()


class VerifyOtpSerializer(StrictTypesMixin, serializers.Serializer):
    # Where a failed code sends the client for a new one.
    resend_route = "users:resend-otp"

    email = serializers.EmailField(max_length=254)
    otp = serializers.CharField(
        required=False, help_text=f"The {CODE_DIGITS}-digit code from the email."
    )
    otp_code = serializers.CharField(
        required=False, write_only=True, help_text="Older name for `otp`, still accepted."
    )

    def validate(self, attrs: dict) -> dict:
        code = attrs.get("otp") or attrs.get("otp_code")
        if not code:
            message = self.fields["otp"].error_messages["required"]
            raise serializers.ValidationError({"otp": [message]}, code="required")
        if not CODE_PATTERN.fullmatch(code):
            raise invalid_code_error(resend_route=self.resend_route)
        return {"email": normalized_email(attrs["email"]), "otp": code}


class PasswordResetConfirmSerializer(VerifyOtpSerializer):
    resend_route = "users:password-reset"

    new_password = new_password_field()

    def validate(self, attrs: dict) -> dict:
        checked = super().validate(attrs)
        # Checked before the service spends the code, so a weak password costs no attempt.
        new_password = attrs["new_password"]
        if problems := password_problems(new_password, user=CustomUser(email=checked["email"])):
            raise serializers.ValidationError({"new_password": problems})
        return {**checked, "new_password": new_password}


class PasswordChangeSerializer(StrictTypesMixin, serializers.Serializer):
    old_password = password_field()
    new_password = new_password_field()

    def validate_old_password(self, value: str) -> str:
        if not self.context["request"].user.check_password(value):
            message = "This is not your current password."
            raise serializers.ValidationError(message, code="password_incorrect")
        return value

    def validate_new_password(self, value: str) -> str:
        if problems := password_problems(value, user=self.context["request"].user):
            raise serializers.ValidationError(problems)
        return value


class EmailSerializer(StrictTypesMixin, serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class LoginSerializer(StrictTypesMixin, serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = password_field()


class LogoutSerializer(StrictTypesMixin, serializers.Serializer):
    refresh = serializers.CharField()

    def validate_refresh(self, value: str) -> RefreshToken:
        message = "This refresh token is invalid, expired or already revoked."
        try:
            token = RefreshToken(value)
        except TokenError as exc:
            raise serializers.ValidationError(message, code="invalid_token") from exc
        return token


class TokenRefreshSerializer(StrictTypesMixin, SimpleJWTTokenRefreshSerializer):
    """simplejwt's rotation, refusing with 401 a token whose user is gone or has a new password.

    simplejwt answers 500 for a deleted user, and does not check the password digest that
    CHECK_REVOKE_TOKEN puts in tokens until an access token is used.
    """

    def validate(self, attrs: dict) -> dict[str, str]:
        refresh = self.token_class(attrs["refresh"])
        user_id = refresh.get(jwt_settings.USER_ID_CLAIM)
        user = CustomUser.objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        if user is None:
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], "no_active_account"
            )
        password_digest = refresh.get(jwt_settings.REVOKE_TOKEN_CLAIM)
        if jwt_settings.CHECK_REVOKE_TOKEN and password_digest != get_md5_hash_password(
            user.password
        ):
            raise AuthenticationFailed("The user's password has been changed.", "password_changed")
        return super().validate(attrs)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class MeSerializer(serializers.ModelSerializer):
    class Meta:
        model = CustomUser
        fields = ["id", "email", "is_verified", "date_joined"]
        read_only_fields = fields
