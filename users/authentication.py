"""Bearer-token authentication that reads a user's row once every few seconds, not per request.

simplejwt loads the token's user on every request, to refuse inactive accounts and tokens
issued before a password change (CHECK_REVOKE_TOKEN). That read was 16-19% of a job
submission's Python time in the web process (py-spy). Each process now keeps the active users
it loaded for AUTH_USER_CACHE_SECONDS and checks tokens against the kept copy, so a password
change or a deactivation made through another process stops that user's access tokens within
that time; in the process that made it, at once. Logging out never stopped access tokens (they live
JWT_ACCESS_MINUTES), so this adds seconds to a window that is minutes long.
"""

import copy
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

# Users active within a few seconds, per process; beyond it the oldest are dropped. About a
# kilobyte each (tracemalloc), so the cap keeps a web process's memory flat.
MAX_REMEMBERED_USERS = 1_000


class RecentUsers:
    """Users read from the database in the last few seconds, by id; one per process.

    Ids are kept as strings, the way tokens carry them.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._users: dict[str, tuple[float, AbstractBaseUser]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, user_id: str) -> AbstractBaseUser | None:
        """Return a copy of the user if read recently enough, else None."""
        entry = self._users.get(user_id)
        if entry is None or entry[0] <= self._clock():
            return None
        # A copy: a view may change its request.user, and threads share this one.
        return copy.copy(entry[1])

    def remember(self, user_id: str, user: AbstractBaseUser) -> None:
        seconds = settings.AUTH_USER_CACHE_SECONDS
        if seconds <= 0:
            return
        with self._lock:
            self._users.pop(user_id, None)  # Re-inserted last, so the oldest stay first.
            self._users[user_id] = (self._clock() + seconds, copy.copy(user))
            while len(self._users) > MAX_REMEMBERED_USERS:
                del self._users[next(iter(self._users))]

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._users.pop(user_id, None)

    def forget_user(self, user: AbstractBaseUser) -> None:
        """Forget `user`, whose id tokens carry in USER_ID_FIELD."""
        self.forget(str(getattr(user, api_settings.USER_ID_FIELD)))

    def clear(self) -> None:
        with self._lock:
            self._users.clear()


recent_users = RecentUsers()


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def forget_changed_user(sender: type, instance: AbstractBaseUser, **kwargs: object) -> None:
    recent_users.forget_user(instance)


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's bearer-token authentication, with its user read through RecentUsers."""

    def get_user(self, validated_token: Token) -> AbstractBaseUser:
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError as e:
            raise InvalidToken(_("Token contained no recognizable user identification")) from e
        user = recent_users.get(str(user_id))
        if user is not None and _issued_for_password(validated_token, user):
            return user
        # simplejwt's lookup and checks. A kept user whose password the token does not match
        # is read again too: the token may be newer than the copy.
        user = super().get_user(validated_token)
        recent_users.remember(str(user_id), user)
        return user


def _issued_for_password(token: Token, user: AbstractBaseUser) -> bool:
    if not api_settings.CHECK_REVOKE_TOKEN:
        return True
    return token.get(api_settings.REVOKE_TOKEN_CLAIM) == get_md5_hash_password(user.password)
