"""The one policy for password logins, at /api/login/ and at the admin's login page alike.

- Per client address: at most THROTTLE_LOGIN attempts (20 a minute) whatever the accounts;
  beyond it an attempt is refused before any password is checked.
- Per account: wrong passwords in a row are counted (`failed_logins`). At LOGIN_MAX_FAILURES
  (100, the cap NIST SP 800-63B sets) the account locks: from then on its password logs in
  only together with an unlock code, which is emailed to the owner at once and again on
  request (/api/login/unlock/).
- The unlock code is checked only once the password has proved right, and it is a long code
  (users.otp) that guesses cannot use up. So an attacker who knows only the address can
  neither get in nor keep the owner out, and guesses past the lock teach them nothing: the
  right password without the code gets the answer a wrong one gets.

Counters by address never answer differently for an address with no account: only the
owner's mailbox learns of a lock.
"""

import logging

from django.conf import settings
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from job_system.throttling import CountingRateThrottle
from users.models import CustomUser, EmailCode
from users.otp import otp_issue, otp_verify

logger = logging.getLogger(__name__)


class LoginThrottled(Exception):
    """Too many login attempts from one client address; try again after `wait` seconds."""

    def __init__(self, *, wait: float) -> None:
        super().__init__(f"Too many login attempts from your address. Try again in {wait:.0f} s.")
        self.wait = wait


class LoginRateThrottle(CountingRateThrottle):
    """Login attempts per client address (NUM_PROXIES honoured), API and admin together."""

    scope = "login"

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def login_attempt_count(*, request: HttpRequest) -> None:
    """Count one login attempt against the client's address; raise LoginThrottled past the rate."""
    throttle = LoginRateThrottle()
    if not throttle.allow_request(request, None):
        raise LoginThrottled(wait=throttle.wait())


def login_failure_record(*, email: str) -> None:
    """Count a wrong password for the account at `email`; lock it at LOGIN_MAX_FAILURES.

    Of racing failures, exactly one locks the account and emails the owner an unlock code
    (a conditional update).
    """
    account = CustomUser.objects.filter(email=email, is_active=True)
    account.update(failed_logins=F("failed_logins") + 1)
    lockable = account.filter(failed_logins__gte=settings.LOGIN_MAX_FAILURES, login_locked_at=None)
    if lockable.update(login_locked_at=timezone.now()) and (user := account.first()):
        logger.warning("account locked after %d wrong passwords", settings.LOGIN_MAX_FAILURES)
        otp_issue(user=user, purpose=EmailCode.Purpose.LOGIN_UNLOCK)


def login_allowed(*, user: CustomUser, unlock_code: str) -> bool:
    """Whether a user whose password was right may log in: unlocked, or with an unlock code.

    A working code is spent, and the lock and the count of wrong passwords are cleared.
    """
    if user.login_locked_at is None:
        return True
    if not unlock_code:
        return False
    purpose = EmailCode.Purpose.LOGIN_UNLOCK
    if otp_verify(email=user.email, code=unlock_code, purpose=purpose) is None:
        return False
    CustomUser.objects.filter(pk=user.pk).update(failed_logins=0, login_locked_at=None)
    user.failed_logins, user.login_locked_at = 0, None
    logger.info("account unlocked with an emailed code")
    return True


def login_success_record(*, user: CustomUser) -> None:
    """A right password (with the unlock code, if the account was locked) restarts the count."""
    if user.failed_logins:
        CustomUser.objects.filter(pk=user.pk).update(failed_logins=0)
        user.failed_logins = 0
