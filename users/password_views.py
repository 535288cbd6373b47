"""Password endpoints: change it while signed in, or reset it with an emailed code."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from job_system.openapi import SAMPLE_EMAIL, SAMPLE_PASSWORD, request_example
from users import services
from users.serializers import (
    DetailSerializer,
    EmailSerializer,
    PasswordChangeSerializer,
    PasswordResetConfirmSerializer,
    TokenPairSerializer,
    invalid_code_error,
)
from users.views import (
    EMAIL_EXAMPLE,
    FIELD_ERRORS,
    TAGS,
    THROTTLED,
    THROTTLED_EMAILS,
    UNAUTHENTICATED,
    CodeEmailingView,
    PublicAccountView,
)

# A change away from the sample password and a reset back to it, so that the sample account's
# login example works again after both examples ran.
CHANGED_PASSWORD = f"{SAMPLE_PASSWORD} staple"
# What a reset code looks like; the example holds it, to be replaced with the emailed one.
RESET_CODE_PLACEHOLDER = "ABCD-EFGH-JKMN-PQRS"


class PasswordChangeView(APIView):
    # Unverified users may change their password too: it is theirs either way.
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedRateThrottle]
    # It checks a password, so it shares login's rate (counted per user here).
    throttle_scope = "login"

    @extend_schema(
        tags=TAGS,
        summary="Change the signed-in account's password",
        description="Every session of the account is signed out, this one included: its "
        "tokens stop working. The response carries a fresh token pair for this client.",
        request=PasswordChangeSerializer,
        examples=[
            request_example(
                "A longer password",
                {"old_password": SAMPLE_PASSWORD, "new_password": CHANGED_PASSWORD},
            )
        ],
        responses={
            200: TokenPairSerializer,
            400: OpenApiResponse(
                description='A wrong current password (`{"old_password": ["..."]}`, code '
                "`password_incorrect`) or a weak new one, keyed by `new_password`."
            ),
            401: UNAUTHENTICATED,
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordChangeSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        tokens = services.user_password_change(
            user=request.user, password=serializer.validated_data["new_password"]
        )
        return Response(tokens)


class PasswordResetView(CodeEmailingView):
    throttle_scope = "otp"

    @extend_schema(
        tags=TAGS,
        summary="Email a code to reset a forgotten password",
        description="Answers the same whatever the address; sends a code only to an active "
        "account, and not while the one sent before still works: it is in the owner's inbox, "
        "and nobody else's guesses can use it up.",
        request=EmailSerializer,
        examples=[EMAIL_EXAMPLE],
        responses={202: DetailSerializer, 400: FIELD_ERRORS, 429: THROTTLED_EMAILS},
    )
    def post(self, request: Request) -> Response:
        serializer = EmailSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.user_password_reset_request(email=serializer.validated_data["email"])
        minutes = int(settings.LONG_CODE_TTL.total_seconds() // 60)
        detail = (
            "If the address has an account, a code to reset its password is on its way, "
            f"unless the one sent before still works (codes last {minutes} minutes)."
        )
        return Response({"detail": detail}, status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmView(PublicAccountView):
    throttle_scope = "otp"

    @extend_schema(
        tags=TAGS,
        summary="Set a new password with the emailed reset code",
        description="Every session of the account is signed out, and the address counts as "
        "confirmed. `otp_code` is accepted in place of `otp`.",
        request=PasswordResetConfirmSerializer,
        examples=[
            request_example(
                "The emailed reset code and a new password",
                {
                    "email": SAMPLE_EMAIL,
                    "otp": RESET_CODE_PLACEHOLDER,
                    "new_password": SAMPLE_PASSWORD,
                },
                f"Replace {RESET_CODE_PLACEHOLDER} with the reset code from the email (in "
                "development the worker prints it).",
            )
        ],
        responses={
            200: DetailSerializer,
            400: OpenApiResponse(
                description='Unusable code (`{"otp": ["..."]}`, code `invalid_code`), a weak '
                "new password (keyed by `new_password`), or other invalid input, keyed by field."
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordResetConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = services.user_password_reset(
            email=data["email"], code=data["otp"], password=data["new_password"]
        )
        if user is None:
            raise invalid_code_error(purpose=PasswordResetConfirmSerializer.purpose)
        return Response({"detail": "Your password is changed. You can log in with it now."})
