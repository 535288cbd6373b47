"""Requests while the cache's Redis refuses connections, as while it restarts.

Submissions and logins go on: their throttles let them through, and the active-job cap is
counted in the database. What cannot do without Redis answers 503 with Retry-After, never a
500 (job_system/tests/test_api_security.py).
"""

import pytest
from django.core.cache import cache

from jobs.models import Job

pytestmark = pytest.mark.django_db

# A real connection that is refused: nothing listens on port 1.
REDIS_DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_DOWN,
        }
    }
    yield
    cache.close()


def test_a_submission_is_accepted_while_the_cache_is_down(auth_client, verified_user, redis_down):
    response = auth_client.post(
        "/api/jobs/", {"name": "x", "job_type": "echo", "parameters": {}}, format="json"
    )

    assert response.status_code == 201, response.content
    assert Job.objects.filter(owner=verified_user).count() == 1


def test_the_active_job_cap_still_holds_while_the_cache_is_down(
    auth_client, verified_user, job_factory, redis_down, settings
):
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    job_factory(owner=verified_user)

    response = auth_client.post(
        "/api/jobs/", {"name": "x", "job_type": "echo", "parameters": {}}, format="json"
    )

    assert response.status_code == 429


def test_logging_in_works_while_the_cache_is_down(api_client, verified_user, password, redis_down):
    response = api_client.post(
        "/api/login/", {"email": verified_user.email, "password": password}, format="json"
    )

    assert response.status_code == 200
