from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from users.addresses import InvalidAddress, address_for_lookup, normalize_address


class CustomUserManager(BaseUserManager["CustomUser"]):
    use_in_migrations = True

    def normalize_email(self, email: str | None) -> str:
        # Every lookup and count goes through the one stored form (users.addresses).
        return address_for_lookup(email)

    def get_by_natural_key(self, username: str | None) -> "CustomUser":
        return self.get(email__iexact=self.normalize_email(username))

    def create_user(self, email: str, password: str | None = None, **extra) -> "CustomUser":
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=normalize_address(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra) -> "CustomUser":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("is_verified", True)
        if not (extra["is_staff"] and extra["is_superuser"]):
            raise ValueError("A superuser needs is_staff and is_superuser.")
        return self.create_user(email, password, **extra)


class CustomUser(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("email address", max_length=254, unique=True)
    is_verified = models.BooleanField(
        default=False, help_text="Confirmed the address with an emailed code."
    )
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # When the owner was last told that someone tried to register this address again.
    registration_warned_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Wrong passwords since the last right one; at LOGIN_MAX_FAILURES the account locks
    # (users.login_policy).
    failed_logins = models.PositiveIntegerField(default=0)
    login_locked_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set after too many wrong passwords in a row: from then on the password "
        "logs in only with the unlock code emailed to the owner, or after a password reset. "
        "Clear it (and the count) to unlock the account.",
    )
    # Sharing the workers with other users (jobs.services.admission).
    max_running_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="At most this many of the user's jobs run (or are about to) at once; 0 is no "
        "limit. Empty uses the JOB_USER_CONCURRENCY setting.",
    )
    fair_share_weight = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="The user's share of a busy queue relative to other users': a user of "
        "weight 3 gets three jobs started for every one of a user of weight 1 (1-100).",
    )

    objects = CustomUserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = "user"
        constraints = [
            models.UniqueConstraint(Lower("email"), name="users_unique_email_ci"),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        try:
            self.email = normalize_address(self.email)
        except InvalidAddress as error:
            raise ValidationError({"email": str(error)}) from None


class EmailCode(models.Model):
    """A one-time code sent by email, stored only as a keyed hash."""

    class Purpose(models.TextChoices):
        VERIFY_EMAIL = "verify_email", "Verify email"
        PASSWORD_RESET = "password_reset", "Password reset"
        LOGIN_UNLOCK = "login_unlock", "Login unlock"

    user = models.ForeignKey(CustomUser, on_delete=models.CASCADE, related_name="email_codes")
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    code_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    used_at = models.DateTimeField(null=True, blank=True)
    # Set when a newer code replaces this one, or when too many wrong guesses burn it.
    revoked_at = models.DateTimeField(null=True, blank=True)
    # For an address-confirmation code: the password chosen in the sign-up that asked for it,
    # hashed. Confirming this code makes it the account's password, so a sign-up by someone
    # else for the same address can never leave its password on the owner's account.
    password_hash = models.CharField(max_length=128, blank=True, default="", editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["user", "purpose", "-created_at"], name="emailcode_latest"),
            models.Index(fields=["expires_at"], name="emailcode_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} code for {self.user}"
