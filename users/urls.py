from django.urls import path

from users import password_views, views

app_name = "users"

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="register"),
    path("verify-otp/", views.VerifyOtpView.as_view(), name="verify-otp"),
    path("verify-email/", views.LegacyVerifyEmailView.as_view(), name="verify-email"),
    path("resend-otp/", views.ResendOtpView.as_view(), name="resend-otp"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/unlock/", views.LoginUnlockView.as_view(), name="login-unlock"),
    path("token/refresh/", views.TokenRefreshView.as_view(), name="token-refresh"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("me/", views.MeView.as_view(), name="me"),
    path("password/change/", password_views.PasswordChangeView.as_view(), name="password-change"),
    path("password/reset/", password_views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password/reset/confirm/",
        password_views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
]
