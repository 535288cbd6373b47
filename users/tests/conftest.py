import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import _state as celery_state
from django.db import connection
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle
from rest_framework_simplejwt.tokens import RefreshToken

from job_system.celery import app as celery_app
from users.models import EmailCode
from users.otp import otp_issue

# A 6-digit code, or a long one in dashed groups of four (users.otp).
CODE_LINE = re.compile(r"^(\d{6}|[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})$", re.MULTILINE)


@pytest.fixture(autouse=True)
def fresh_cache(settings) -> None:
    """Give each test its own cache key prefix, so throttle counters never carry over.

    This replaces cache.clear(): on the Redis backend that is FLUSHDB, which would also wipe
    the Celery broker queues and the keys of anyone else's test run sharing the database.
    """
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"},
    }


@pytest.fixture(autouse=True)
def fast_password_hasher(settings) -> None:
    """Hash passwords cheaply; the tests are about flows, not about the hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def celery_eager() -> Iterator[None]:
    """Run Celery tasks in-process for this test only, then restore the app's settings.

    Shared tasks run on the current app, and a test elsewhere may have left another app
    current (any Celery() made without set_as_current=False), so ours is made current too.
    """
    conf = celery_app.conf
    saved = (conf.task_always_eager, conf.task_eager_propagates)
    previous_app = celery_state.get_current_app()
    celery_app.set_current()
    conf.task_always_eager = conf.task_eager_propagates = True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved
    previous_app.set_current()


@pytest.fixture
def post(api_client, django_capture_on_commit_callbacks, celery_eager) -> Callable:
    """POST JSON to a named route, then deliver the emails the request queued for commit.

    Extra keyword arguments go into the request's environ, e.g. REMOTE_ADDR="203.0.113.9".
    """

    def _post(route: str, data: dict, **extra):
        with django_capture_on_commit_callbacks(execute=True):
            return api_client.post(reverse(route), data, format="json", **extra)

    return _post


def code_in(message) -> str:
    """Return the one code an email carries on a line of its own."""
    codes = CODE_LINE.findall(message.body)
    assert len(codes) == 1, message.body
    return codes[0]


@pytest.fixture
def last_code(mailoutbox) -> Callable[[], str]:
    """Read the code from the most recent email."""
    return lambda: code_in(mailoutbox[-1])


@pytest.fixture
def issue_code(django_capture_on_commit_callbacks, celery_eager, mailoutbox) -> Callable:
    """Issue a code (address confirmation unless told) through the service; return it."""

    def _issue(user, purpose: str = EmailCode.Purpose.VERIFY_EMAIL) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            assert otp_issue(user=user, purpose=purpose)
        return code_in(mailoutbox[-1])

    return _issue


@pytest.fixture
def bearer(api_client) -> Callable:
    """Sign the client in as a user with a real token pair; return the refresh token."""

    def _bearer(user) -> str:
        refresh = RefreshToken.for_user(user)
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {refresh.access_token}")
        return str(refresh)

    return _bearer


@pytest.fixture
def throttle_rates(monkeypatch) -> Callable[..., None]:
    """Change some throttle rates for one test, e.g. throttle_rates(otp_ip_hour="99/hour").

    DRF copies the rates onto SimpleRateThrottle when it is imported, so overriding the
    REST_FRAMEWORK setting would not reach the throttles.
    """

    def _set(**rates: str) -> None:
        merged = {**SimpleRateThrottle.THROTTLE_RATES, **rates}
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", merged)

    return _set


@pytest.fixture
def run_at_once() -> Callable[[int, Callable], list]:
    """Run an action in several threads released together; return their results in order."""
    return _run_at_once


def _run_at_once(count: int, action: Callable) -> list:
    barrier = threading.Barrier(count)

    def run():
        try:
            barrier.wait()
            return action()
        finally:
            # Each thread opened its own connection; an open one would block test teardown.
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run) for _ in range(count)]
        return [future.result() for future in futures]
