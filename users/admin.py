from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from users import services
from users.addresses import InvalidAddress, normalize_address
from users.login_policy import LoginThrottled
from users.models import CustomUser, EmailCode


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's login under the policy of /api/login/ (users.login_policy), counters and all.

    Staff accounts are the most valuable to guess at; Django's form would call authenticate()
    with no limit. A locked account unlocks at /api/login/ with the emailed code (or by a
    password reset), after which this form takes the password again.
    """

    def clean(self) -> dict:
        email, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if email is not None and password:
            try:
                self.user_cache = services.user_authenticate(
                    request=self.request, email=email, password=password
                )
            except LoginThrottled as exc:
                raise ValidationError(str(exc), code="throttled") from exc
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


admin.site.login_form = AdminLoginForm


def _clean_address(value: str | None) -> str:
    try:
        return normalize_address(value or "")
    except InvalidAddress as error:
        raise ValidationError(str(error), code="invalid") from None


class CustomUserCreationForm(AdminUserCreationForm):
    class Meta:
        model = CustomUser
        fields = ("email",)

    def clean_email(self) -> str:
        return _clean_address(self.cleaned_data.get("email"))


class CustomUserChangeForm(UserChangeForm):
    class Meta:
        model = CustomUser
        fields = "__all__"

    def clean_email(self) -> str:
        return _clean_address(self.cleaned_data.get("email"))


@admin.register(CustomUser)
class CustomUserAdmin(UserAdmin):
    add_form = CustomUserCreationForm
    form = CustomUserChangeForm
    list_display = ("email", "is_verified", "is_staff", "date_joined")
    list_filter = ("is_verified", "is_staff", "is_superuser", "is_active")
    search_fields = ("email",)
    ordering = ("-date_joined",)
    readonly_fields = ("last_login", "date_joined")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Status", {"fields": ("is_active", "is_verified", "is_staff", "is_superuser")}),
        ("Logging in", {"fields": ("failed_logins", "login_locked_at")}),
        ("Sharing the workers", {"fields": ("max_running_jobs", "fair_share_weight")}),
        ("Permissions", {"fields": ("groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )


@admin.register(EmailCode)
class EmailCodeAdmin(admin.ModelAdmin):
    """Show codes for support work; the hash stays hidden and nothing can be edited."""

    fields = ("user", "purpose", "created_at", "expires_at", "attempts", "used_at", "revoked_at")
    readonly_fields = fields
    list_display = fields
    list_filter = ("purpose",)
    list_select_related = ("user",)
    search_fields = ("user__email",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: EmailCode | None = None) -> bool:
        return False
