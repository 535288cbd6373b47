from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission


class EmailNotVerified(PermissionDenied):
    default_detail = "Confirm your email address with the code we sent before using this."
    default_code = "email_not_verified"


class IsVerified(BasePermission):
    """Allow authenticated users who have confirmed their email address."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if not user.is_verified:
            raise EmailNotVerified()
        return True
