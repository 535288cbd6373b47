import uuid
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from rest_framework.test import APIClient

from events import recording
from job_system.cache import cache_redis
from job_system.health import recent_readiness
from job_system.heartbeats import heartbeat_redis
from jobs import queue
from jobs.services import admission
from jobs.tests.factories import JobFactory, JobResultFactory
from jobs.tests.live import celery_process, start_procfile_worker, start_worker, subprocess_env
from users.authentication import recent_users
from users.tests.factories import DEFAULT_PASSWORD, UserFactory


@pytest.fixture(autouse=True)
def _forget_recent_users():
    """Drop the users a test authenticated (users.authentication): ids repeat on SQLite."""
    yield
    recent_users.clear()


@pytest.fixture(autouse=True)
def _forget_unheard_users():
    """Drop which users this process believed had no listener (events.recording)."""
    yield
    recording.forget_unheard()


@pytest.fixture(autouse=True)
def _forget_readiness():
    """Drop the readiness answer a test's request left for the next ones (job_system.health)."""
    yield
    recent_readiness.clear()


@pytest.fixture(autouse=True)
def _forget_active_job_counts():
    """Drop the active-job counts a test cached (jobs.services.active_cap).

    User ids repeat across tests on SQLite, so a later test would see an earlier one's count.
    """
    yield
    try:
        client = cache_redis()
        for key in client.scan_iter(match=cache.make_key("active-jobs:*")):
            client.delete(key)
    except redis.RedisError:
        pass  # A test that stopped Redis left no count behind either.


@pytest.fixture(autouse=True)
def _forget_admission_state():
    """Drop the queues' "jobs wait" flags and the count of worker processes a test left."""
    yield
    admission.forget_processes()
    try:
        client = heartbeat_redis()
        for key in client.scan_iter(match="jobsys:jobs-waiting:*"):
            client.delete(key)
    except redis.RedisError:
        pass


@pytest.fixture(autouse=True)
def _publish_what_requests_handed_over():
    """Send the messages a test's requests left with the Publisher before the next test starts."""
    yield
    queue.publisher.flush(timeout=10)


@pytest.fixture
def own_cache_keys(settings) -> None:
    """A cache key prefix of this test's own, so counts kept in Redis never carry over."""
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"},
    }


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def password() -> str:
    return DEFAULT_PASSWORD


@pytest.fixture
def user_factory(db):
    return UserFactory


@pytest.fixture
def job_factory(db):
    return JobFactory


@pytest.fixture
def job_result_factory(db):
    return JobResultFactory


@pytest.fixture
def verified_user(user_factory):
    return user_factory(is_verified=True)


@pytest.fixture
def unverified_user(user_factory):
    return user_factory(is_verified=False)


@pytest.fixture
def auth_client(api_client, verified_user) -> APIClient:
    """An API client authenticated as `verified_user`."""
    api_client.force_authenticate(verified_user)
    return api_client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run integration tests last.

    Their worker lives for the rest of the session and takes every message published to the
    test Redis; unit tests that publish must not have a worker acting on their rows.
    """
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)


# Integration fixtures: real Celery processes against the test database and Redis.


@pytest.fixture(scope="session")
def celery_log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("celery")


@pytest.fixture(scope="session")
def live_worker(django_db_setup, django_db_blocker, celery_log_dir):
    """One real worker process for the session, serving every job queue."""
    worker = start_worker("worker", celery_log_dir)
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def live_housekeeping(django_db_setup, django_db_blocker, celery_log_dir):
    """The Procfile's housekeeping worker for the session: the only one serving Beat's tasks."""
    worker = start_procfile_worker("housekeeping", celery_log_dir, subprocess_env())
    yield worker
    worker.stop()


@pytest.fixture
def live_beat(transactional_db, celery_log_dir, live_housekeeping):
    """A real Beat process with the database scheduler, for one test."""
    beat = celery_process(
        "beat",
        ["beat", "--loglevel=INFO", f"--pidfile={celery_log_dir / 'beat.pid'}"],
        celery_log_dir,
        subprocess_env(),
    )
    yield beat
    beat.stop()
