from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.http import HttpRequest

from users.models import CustomUser, EmailCode


class CustomUserCreationForm(AdminUserCreationForm):
    class Meta:
        model = CustomUser
        fields = ("email",)

    def clean_email(self) -> str:
        return CustomUser.objects.normalize_email(self.cleaned_data.get("email"))


class CustomUserChangeForm(UserChangeForm):
    class Meta:
        model = CustomUser
        fields = "__all__"

    def clean_email(self) -> str:
        return CustomUser.objects.normalize_email(self.cleaned_data.get("email"))


@admin.register(CustomUser)
class CustomUserAdmin(UserAdmin):
    add_form = CustomUserCreationForm
    form = CustomUserChangeForm
    list_display = ("email", "is_verified", "is_staff", "date_joined")
    list_filter = ("is_verified", "is_staff", "is_superuser", "is_active")
    search_fields = ("email",)
    ordering = ("-date_joined",)
    readonly_fields = ("last_login", "date_joined", "failed_logins")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Status", {"fields": ("is_active", "is_verified", "is_staff", "is_superuser")}),
        ("Logging in", {"fields": ("failed_logins", "login_locked_at")}),
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
