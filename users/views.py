"""Account endpoints: thin views that validate with serializers and act through services."""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import AUTH_HEADER_TYPES
from rest_framework_simplejwt.views import TokenRefreshView as SimpleJWTTokenRefreshView

from job_system.openapi import SAMPLE_EMAIL, SAMPLE_PASSWORD, ErrorSerializer, request_example
from users import otp, services
from users.login_policy import LoginThrottled
from users.permissions import EmailNotVerified
from users.serializers import (
    DetailSerializer,
    EmailSerializer,
    InvalidCredentials,
    LoginSerializer,
    LogoutSerializer,
    MeSerializer,
    RegisterResponseSerializer,
    RegisterSerializer,
    ResendOtpSerializer,
    TokenPairSerializer,
    TokenRefreshSerializer,
    VerifyOtpSerializer,
    error_with_code,
    invalid_code_error,
)
from users.throttles import CODE_EMAIL_THROTTLES

TAGS = ["accounts"]
FIELD_ERRORS = OpenApiResponse(
    description='Invalid input, keyed by field: `{"field": ["message"]}`.'
)
THROTTLED = OpenApiResponse(ErrorSerializer, description="Too many requests; retry later.")
THROTTLED_EMAILS = OpenApiResponse(
    ErrorSerializer,
    description="Too many requests, or this client asked for too many emails; retry later.",
)
UNAUTHENTICATED = OpenApiResponse(ErrorSerializer, description="No valid bearer token.")
SAMPLE_ACCOUNT = {"email": SAMPLE_EMAIL, "password": SAMPLE_PASSWORD}
# Values only the server can give: the examples hold these, to be replaced before executing.
CODE_PLACEHOLDER = "123456"
REFRESH_PLACEHOLDER = "paste the refresh token that login or refresh returned"
CODE_EXAMPLE = request_example(
    "The emailed code",
    {"email": SAMPLE_EMAIL, "otp": CODE_PLACEHOLDER},
    f"Replace {CODE_PLACEHOLDER} with the code from the email (in development the worker "
    "prints it).",
)
EMAIL_EXAMPLE = request_example("An address", {"email": SAMPLE_EMAIL})
REFRESH_EXAMPLE = request_example(
    "A refresh token",
    {"refresh": REFRESH_PLACEHOLDER},
    "Paste the `refresh` token of the last login or refresh: each one works once.",
)


def send_limits() -> str:
    """Describe how often codes can be sent, the same for every address."""
    seconds = int(settings.OTP_RESEND_COOLDOWN.total_seconds())
    return (
        f"You can ask again every {seconds} seconds, up to {settings.OTP_MAX_SENDS_PER_HOUR} "
        f"times an hour and {settings.OTP_MAX_SENDS_PER_DAY} times a day."
    )


# Endpoints used before login: no authenticators, so a stale bearer token cannot cause a 401.
class PublicAccountView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]


# Endpoints that email codes also count against the caller's per-IP email caps.
class CodeEmailingView(PublicAccountView):
    throttle_classes = [ScopedRateThrottle, *CODE_EMAIL_THROTTLES]


class RegisterView(CodeEmailingView):
    throttle_scope = "register"

    @extend_schema(
        tags=TAGS,
        summary="Create an account and email a confirmation code",
        description="Answers the same whether or not the address already has an account.",
        request=RegisterSerializer,
        examples=[request_example("A new account", SAMPLE_ACCOUNT)],
        responses={201: RegisterResponseSerializer, 400: FIELD_ERRORS, 429: THROTTLED_EMAILS},
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        email = serializer.validated_data["email"]
        services.user_register(email=email, password=serializer.validated_data["password"])
        detail = (
            f"Check your inbox for a {otp.CODE_DIGITS}-digit code and send it to "
            f"{reverse('users:verify-otp')} to confirm your address."
        )
        return Response({"email": email, "detail": detail}, status=status.HTTP_201_CREATED)


class VerifyOtpView(PublicAccountView):
    throttle_scope = "otp"

    @extend_schema(
        tags=TAGS,
        summary="Confirm an email address with its code",
        description="`otp_code` is accepted in place of `otp` for older clients.",
        request=VerifyOtpSerializer,
        examples=[CODE_EXAMPLE],
        responses={
            200: DetailSerializer,
            400: OpenApiResponse(
                description='Unusable code (`{"otp": ["..."]}`, code `invalid_code`) or '
                "invalid input, keyed by field."
            ),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = VerifyOtpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if services.user_verify_email(email=data["email"], code=data["otp"]) is None:
            raise invalid_code_error()
        return Response({"detail": "Your email address is confirmed. You can log in now."})


@extend_schema_view(
    post=extend_schema(deprecated=True, summary="Confirm an email address (old path)")
)
class LegacyVerifyEmailView(VerifyOtpView):
    """Serve /api/verify-email/, the path older clients use for /api/verify-otp/."""


class ResendOtpView(CodeEmailingView):
    throttle_scope = "otp"

    @extend_schema(
        tags=TAGS,
        summary="Email a new confirmation code for your sign-up",
        description="Send the password you signed up with: the new code confirms the sign-up "
        "made with it, and no one else's. Answers the same whatever the address and password; "
        "sends nothing during the cooldown or past the address's hourly and daily caps.",
        request=ResendOtpSerializer,
        examples=[request_example("The sign-up", SAMPLE_ACCOUNT)],
        responses={202: DetailSerializer, 400: FIELD_ERRORS, 429: THROTTLED_EMAILS},
    )
    def post(self, request: Request) -> Response:
        serializer = ResendOtpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.user_signup_code_resend(**serializer.validated_data)
        detail = f"If the address needs confirming, a new code is on its way. {send_limits()}"
        return Response({"detail": detail}, status=status.HTTP_202_ACCEPTED)


class LoginView(PublicAccountView):
    # The login policy counts attempts per client address itself, for the admin login too.
    throttle_classes: list = []

    @extend_schema(
        tags=TAGS,
        summary="Exchange email and password for access and refresh tokens",
        description="After too many wrong passwords in a row an account's password logs in "
        "only together with `unlock_code`, the code emailed to its owner; until then the "
        "right password gets the same 401 as a wrong one.",
        request=LoginSerializer,
        examples=[request_example("The account of the sign-up example", SAMPLE_ACCOUNT)],
        responses={
            200: TokenPairSerializer,
            400: FIELD_ERRORS,
            401: OpenApiResponse(ErrorSerializer, description="Code `invalid_credentials`."),
            403: OpenApiResponse(ErrorSerializer, description="Code `email_not_verified`."),
            429: OpenApiResponse(
                ErrorSerializer,
                description="Too many login attempts from this address; `Retry-After` says "
                "when to try again.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = services.user_authenticate(request=request, **serializer.validated_data)
        except LoginThrottled as exc:
            raise Throttled(wait=exc.wait) from exc
        if user is None:
            raise error_with_code(InvalidCredentials)
        if not user.is_verified:
            raise error_with_code(EmailNotVerified)
        return Response(services.user_login(user=user))

    def get_authenticate_header(self, request: Request) -> str:
        # Without this DRF turns 401 into 403, since the view has no authenticators.
        return f'{AUTH_HEADER_TYPES[0]} realm="api"'


class LoginUnlockView(CodeEmailingView):
    throttle_scope = "otp"

    @extend_schema(
        tags=TAGS,
        summary="Email an unlock code to an account locked after too many wrong passwords",
        description="Answers the same whatever the address; sends a code only to a locked "
        "account, and not while the one sent before still works (it is in the owner's inbox). "
        "Log in with the password and `unlock_code`.",
        request=EmailSerializer,
        examples=[EMAIL_EXAMPLE],
        responses={202: DetailSerializer, 400: FIELD_ERRORS, 429: THROTTLED_EMAILS},
    )
    def post(self, request: Request) -> Response:
        serializer = EmailSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.user_login_unlock_request(email=serializer.validated_data["email"])
        detail = (
            "If the account is locked, an unlock code is on its way, unless the one sent "
            "before still works. Log in with your password and `unlock_code`."
        )
        return Response({"detail": detail}, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    post=extend_schema(
        tags=TAGS,
        summary="Exchange a refresh token for new access and refresh tokens",
        description="The refresh token sent is revoked; sending it again gets 401.",
        examples=[REFRESH_EXAMPLE],
        responses={
            200: TokenPairSerializer,
            400: FIELD_ERRORS,
            401: OpenApiResponse(
                ErrorSerializer,
                description="Invalid, expired or revoked token, or its account is gone or has "
                "a new password.",
            ),
        },
    )
)
class TokenRefreshView(SimpleJWTTokenRefreshView):
    """Rotate a refresh token with simplejwt, documented beside the other account routes."""

    serializer_class = TokenRefreshSerializer


class LogoutView(APIView):
    """Revoke the refresh token sent: holding it is the proof, so no access token is asked for.

    Whoever holds a refresh token can already use it, so letting it revoke itself gives them
    nothing new; and a client can still sign out once its short-lived access token expired.
    """

    # No authenticators: a stale bearer token sent along must not turn a logout into a 401.
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=TAGS,
        summary="Revoke a refresh token",
        description="Needs only the refresh token, no bearer token. Access tokens already "
        "issued stay valid until they expire, a few minutes later.",
        request=LogoutSerializer,
        examples=[REFRESH_EXAMPLE],
        responses={204: None, 400: FIELD_ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.user_logout(refresh=serializer.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    # Unverified users may see their own account, to learn that they must confirm it.
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=TAGS,
        summary="Show the signed-in account",
        responses={200: MeSerializer, 401: UNAUTHENTICATED},
    )
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)
