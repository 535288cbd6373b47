import pytest
from rest_framework.test import APIClient

from jobs.tests.factories import JobFactory, JobResultFactory
from users.tests.factories import DEFAULT_PASSWORD, UserFactory


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
