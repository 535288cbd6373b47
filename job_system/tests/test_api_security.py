"""OWASP API Security Top 10 rules that span the whole API."""

import pytest
from django.conf import settings
from django.core.cache import cache
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from jobs.models import Job, JobResult
from schedules.models import Schedule
from schedules.tests.factories import ScheduleFactory
from users.models import CustomUser
from webhooks.endpoints import callbacks_create

pytestmark = pytest.mark.django_db


PK = "(?P<pk>[^/]+)"  # how the router writes an object id into a route (lookup_value_regex)


def object_routes(patterns=None, prefix: str = ""):
    """Yield (route, basename, methods) for every API route that addresses one object."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from object_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and PK in route and route.startswith("api/"):
            actions = getattr(pattern.callback, "actions", None) or {}
            basename = pattern.callback.initkwargs.get("basename")
            yield route, basename, sorted(actions)


def object_route_cases():
    return [
        pytest.param(route, basename, method, id=f"{method} {route}")
        for route, basename, methods in object_routes()
        for method in methods
    ]


@pytest.fixture
def someone_elses(job_result_factory):
    """One object of each kind that routes address, owned by another user."""
    result = job_result_factory()
    [callback] = callbacks_create(jobs=[result.job], urls=["https://hooks.example.com/"])
    schedule = ScheduleFactory()
    return {"job": result.job, "job-result": result, "webhook": callback, "schedule": schedule}


def snapshot(target) -> dict:
    """The row a request on `target` could change: a schedule's own, else its job's."""
    if isinstance(target, Schedule):
        return Schedule.objects.values().get(pk=target.pk)
    return Job.objects.values().get(pk=getattr(target, "job_id", target.pk))


@pytest.mark.parametrize(("route", "basename", "method"), object_route_cases())
def test_another_users_object_is_a_404_on_every_route_and_method(
    auth_client, someone_elses, route, basename, method
):
    assert basename in someone_elses, f"new object route {route}: add its kind to this test"
    target = someone_elses[basename]
    url = "/" + route.replace(PK, str(target.pk)).replace("^", "").replace("$", "")
    before = snapshot(target)

    response = getattr(auth_client, method)(url, {}, format="json")

    assert response.status_code == 404, (method, url, response.content)
    assert snapshot(target) == before


def test_the_route_list_covers_jobs_results_webhooks_and_schedules():
    basenames = {basename for _, basename, _ in object_routes()}
    assert basenames == {"job", "job-result", "webhook", "schedule"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "completed"),
        ("owner", 1),
        ("attempts", 5),
        ("progress", 100),
        ("result", {"output": {"forged": True}}),
        ("error_message", "forged"),
        ("started_at", "2020-01-01T00:00:00Z"),
        ("completed_at", "2020-01-01T00:00:00Z"),
    ],
)
def test_server_owned_job_fields_never_change_through_the_api(auth_client, field, value):
    created = auth_client.post("/api/jobs/", {"name": "x", field: value}, format="json")

    job = Job.objects.get(pk=created.json()["id"])
    assert job.status == Job.Status.PENDING
    assert job.attempts == 0
    assert job.progress == 0
    assert job.error_message == ""
    assert job.started_at is None
    assert job.completed_at is None
    assert not JobResult.objects.filter(job=job).exists()


def test_registering_cannot_make_a_staff_or_verified_account(api_client):
    cache.clear()
    api_client.post(
        "/api/register/",
        {
            "email": "mallory@example.com",
            "password": "a long and unusual passphrase",
            "is_staff": True,
            "is_superuser": True,
            "is_verified": True,
        },
        format="json",
    )

    user = CustomUser.objects.get(email="mallory@example.com")
    assert not user.is_staff
    assert not user.is_superuser
    assert not user.is_verified


def test_a_body_over_the_limit_is_refused_with_413(auth_client):
    body = '{"name": "big", "parameters": {"message": "' + "x" * settings.MAX_REQUEST_BODY_BYTES
    response = auth_client.generic("POST", "/api/jobs/", body + '"}}', "application/json")

    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert not Job.objects.exists()


def test_parameters_over_the_type_limit_are_refused_by_field(auth_client):
    response = auth_client.post(
        "/api/jobs/",
        {"name": "x", "job_type": "echo", "parameters": {"message": "x" * 10_001}},
        format="json",
    )

    assert response.status_code == 400
    assert "message" in response.json()["parameters"]


def test_page_size_is_capped(auth_client, verified_user, job_factory):
    job_factory.create_batch(105, owner=verified_user)

    response = auth_client.get("/api/jobs/", {"page_size": 1000})

    assert len(response.json()["results"]) == 100


def test_a_user_over_the_active_job_cap_gets_429(auth_client, verified_user, job_factory, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 3
    job_factory.create_batch(2, owner=verified_user)
    job_factory(owner=verified_user, status=Job.Status.IN_PROGRESS)
    job_factory(owner=verified_user, status=Job.Status.COMPLETED)  # finished: does not count

    response = auth_client.post("/api/jobs/", {"name": "one too many"}, format="json")

    assert response.status_code == 429
    assert response.json()["code"] == "too_many_active_jobs"
    assert Job.objects.count() == 4


def test_job_creation_is_throttled_per_user_in_the_shared_cache(auth_client, monkeypatch):
    # DRF reads the rates once, at import; set them the way it would have read them.
    rates = {**ScopedRateThrottle.THROTTLE_RATES, "job_create": "2/min"}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)
    cache.clear()

    statuses = [
        auth_client.post("/api/jobs/", {"name": "x"}, format="json").status_code for _ in range(3)
    ]

    assert statuses == [201, 201, 429]
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")


def test_cors_is_off_unless_origins_are_configured(api_client, settings):
    refused = api_client.options(
        "/api/jobs/",
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    allowed = api_client.options(
        "/api/jobs/",
        HTTP_ORIGIN="https://app.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )

    assert "access-control-allow-origin" not in refused.headers
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"


@pytest.fixture
def crashing_client(settings) -> APIClient:
    """A client of views that crash (broken_urls), which gets what a real client would."""
    settings.DEBUG = False
    settings.ROOT_URLCONF = "job_system.tests.broken_urls"
    return APIClient(raise_request_exception=False)


def test_a_server_error_answers_json_without_a_traceback(crashing_client):
    response = crashing_client.get("/broken/")

    assert response.status_code == 500
    assert response.json() == {"error": "Server Error (500)"}
    assert b"Traceback" not in response.content
    assert b"ZeroDivisionError" not in response.content


@pytest.mark.parametrize(
    ("path", "code"), [("/locked/", "database_unavailable"), ("/redis-down/", "redis_unavailable")]
)
def test_a_database_or_redis_out_of_reach_is_a_503_with_retry_after(crashing_client, path, code):
    response = crashing_client.get(path)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == code


def test_a_bad_query_is_still_a_500(crashing_client):
    response = crashing_client.get("/bad-query/")

    assert response.status_code == 500
    assert response.json() == {"error": "Server Error (500)"}


def test_an_unknown_api_address_answers_json(api_client):
    response = api_client.get("/api/no-such-thing/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_an_unknown_address_outside_the_api_keeps_djangos_page(api_client):
    response = api_client.get("/no-such-page/")

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
