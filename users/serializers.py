"""Account request validation and response shapes; writing is left to the services."""

import re

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from rest_framework import serializers
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.fields import get_error_detail
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from users.models import CustomUser
from users.otp import CODE_DIGITS
from users.permissions import EmailNotVerified

CODE_PATTERN = re.compile(rf"\d{{{CODE_DIGITS}}}")


class InvalidCredentials(AuthenticationFailed):
    default_detail = "Invalid email or password."
    default_code = "invalid_credentials"


def error_with_code(exc_class: type[APIException]) -> APIException:
    """Build `exc_class` so its body carries the code beside the detail."""
    code = exc_class.default_code
    return exc_class({"detail": exc_class.default_detail, "code": code}, code)


def invalid_code_error() -> serializers.ValidationError:
    """Build the one error every unusable code gets, whatever the reason."""
    minutes = int(settings.OTP_TTL.total_seconds() // 60)
    message = (
        f"The code is invalid or has expired. Codes last {minutes} minutes, work once, and "
        f"stop working after {settings.OTP_MAX_ATTEMPTS} wrong tries; ask for a new one at "
        f"{reverse('users:resend-otp')}."
    )
    return serializers.ValidationError({"otp": [message]}, code="invalid_code")


def normalized_email(value: str) -> str:
    """Return the address the way accounts store it."""
    return CustomUser.objects.normalize_email(value)


class RegisterSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=128, style={"input_type": "password"}
    )

    def validate_email(self, value: str) -> str:
        return normalized_email(value)

    def validate(self, attrs: dict) -> dict:
        # An unsaved user lets the similarity validator compare the password with the address.
        try:
            validate_password(attrs["password"], user=CustomUser(email=attrs["email"]))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": get_error_detail(exc)}) from exc
        return attrs


class RegisterResponseSerializer(serializers.Serializer):
    email = serializers.EmailField()
    detail = serializers.CharField()


class VerifyOtpSerializer(serializers.Serializer):
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
            raise invalid_code_error()
        return {"email": normalized_email(attrs["email"]), "otp": code}


class EmailSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class LoginSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(
        write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )

    def validate(self, attrs: dict) -> dict:
        # authenticate() hashes the password for unknown addresses too, so timing tells nothing.
        user = authenticate(
            self.context.get("request"), email=attrs["email"], password=attrs["password"]
        )
        if user is None:
            raise error_with_code(InvalidCredentials)
        if not user.is_verified:
            raise error_with_code(EmailNotVerified)
        return {"user": user}


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField()

    def validate_refresh(self, value: str) -> RefreshToken:
        message = "This refresh token is invalid, expired or already revoked."
        try:
            token = RefreshToken(value)
        except TokenError as exc:
            raise serializers.ValidationError(message, code="invalid_token") from exc
        # Only the token's owner may revoke it.
        owner_id = str(token.get(jwt_settings.USER_ID_CLAIM))
        if owner_id != str(getattr(self.context["request"].user, jwt_settings.USER_ID_FIELD)):
            raise serializers.ValidationError(message, code="invalid_token")
        return token


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class MeSerializer(serializers.ModelSerializer):
    class Meta:
        model = CustomUser
        fields = ["id", "email", "is_verified", "date_joined"]
        read_only_fields = fields
