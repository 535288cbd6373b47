"""Account request validation and response shapes; writing is left to the services."""

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
from users.addresses import InvalidAddress, normalize_address
from users.models import CustomUser, EmailCode
from users.otp import CODE_DIGITS, LONG_CODE_LENGTH, code_canonical, code_lifetime, is_long

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


# Where a client gets a new code of each kind.
CODE_ROUTES = {
    EmailCode.Purpose.VERIFY_EMAIL: "users:resend-otp",
    EmailCode.Purpose.PASSWORD_RESET: "users:password-reset",
    EmailCode.Purpose.LOGIN_UNLOCK: "users:login-unlock",
}


def invalid_code_error(
    *, purpose: str = EmailCode.Purpose.VERIFY_EMAIL, field: str = "otp"
) -> serializers.ValidationError:
    """Build the one error every unusable code gets, whatever the reason."""
    minutes = int(code_lifetime(purpose).total_seconds() // 60)
    rules = (
        " and work once"
        if is_long(purpose)
        else f", work once, and stop working after {settings.OTP_MAX_ATTEMPTS} wrong tries"
    )
    message = (
        f"The code is invalid or has expired. Codes last {minutes} minutes{rules}; ask for a "
        f"new one at {reverse(CODE_ROUTES[purpose])}."
    )
    return serializers.ValidationError({field: [message]}, code="invalid_code")


class EmailAddressField(serializers.EmailField):
    """An email address in the form accounts store it (users.addresses), or a field error."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=254, **kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        try:
            return normalize_address(value)
        except InvalidAddress as error:
            raise serializers.ValidationError(str(error), code="invalid") from None


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
    email = EmailAddressField()
    password = new_password_field()

    def validate(self, attrs: dict) -> dict:
        # An unsaved user lets the similarity validator compare the password with the address.
        if problems := password_problems(attrs["password"], user=CustomUser(email=attrs["email"])):
            raise serializers.ValidationError({"password": problems})
        return attrs


class RegisterResponseSerializer(serializers.Serializer):
    email = serializers.EmailField()
    detail = serializers.CharField()


class VerifyOtpSerializer(StrictTypesMixin, serializers.Serializer):
    # The kind of code the `otp` field takes.
    purpose = EmailCode.Purpose.VERIFY_EMAIL

    email = EmailAddressField()
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
        if code_canonical(purpose=self.purpose, text=code) is None:
            raise invalid_code_error(purpose=self.purpose)
        return {"email": attrs["email"], "otp": code}


class PasswordResetConfirmSerializer(VerifyOtpSerializer):
    purpose = EmailCode.Purpose.PASSWORD_RESET

    otp = serializers.CharField(
        required=False,
        help_text=f"The {LONG_CODE_LENGTH}-character reset code from the email, with or "
        "without its dashes, in any case.",
    )
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
    email = EmailAddressField()


class ResendOtpSerializer(StrictTypesMixin, serializers.Serializer):
    email = EmailAddressField()
    password = password_field(
        max_length=NEW_PASSWORD_MAX_LENGTH,
        help_text="The password chosen at sign-up: the new code confirms that sign-up only.",
    )


class LoginSerializer(StrictTypesMixin, serializers.Serializer):
    email = EmailAddressField()
    password = password_field()
    unlock_code = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=64,
        help_text="Only for an account locked after too many wrong passwords: the unlock code "
        "emailed to its owner (ask for one at /api/login/unlock/).",
    )


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
