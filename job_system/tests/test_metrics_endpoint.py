"""Who may read /metrics, and the HTTP request metrics it shows."""

import ipaddress

import pytest

from job_system.tests.scrape import METRICS_TOKEN, parse, scrape, value
from job_system.tests.test_settings import start_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_ALLOWED_IPS = []
    return METRICS_TOKEN


def networks(*items: str):
    return [ipaddress.ip_network(item) for item in items]


def test_metrics_are_off_and_not_found_without_a_token_or_addresses(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []

    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")

    assert response.status_code == 404


def test_metrics_refuse_a_scraper_without_the_token(client, metrics_token):
    assert client.get("/metrics").status_code == 403


def test_metrics_refuse_a_wrong_token(client, metrics_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}x")

    assert response.status_code == 403


def test_metrics_answer_the_bearer_token_in_prometheus_text_format(client, metrics_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE jobs_pending gauge" in response.content.decode()


def test_metrics_answer_an_allowed_address_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = networks("10.0.0.0/8", "127.0.0.1")

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics").status_code == 200  # the test client's 127.0.0.1


def test_metrics_refuse_an_address_outside_the_allowed_ones(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = networks("10.0.0.0/8")

    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 403


def test_metrics_ignore_a_forged_forwarded_for_header(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = networks("10.0.0.0/8")

    response = client.get("/metrics", REMOTE_ADDR="192.168.1.1", HTTP_X_FORWARDED_FOR="10.0.0.1")

    assert response.status_code == 403


def test_metrics_only_answer_get(client, metrics_token):
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")

    assert response.status_code == 405


def test_requests_are_counted_and_timed_by_route_name_not_by_path(
    client, auth_client, metrics_token, job_factory, verified_user
):
    job = job_factory(owner=verified_user)
    before = scrape(client)

    auth_client.get(f"/api/jobs/{job.pk}/")
    auth_client.get(f"/api/jobs/{job_factory(owner=verified_user).pk}/")
    client.get("/no/such/page/")
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").content.decode()
    after = parse(text)

    detail = {"method": "GET", "route": "job-detail"}
    assert value(after, "http_requests_total", status="200", **detail) == (
        value(before, "http_requests_total", status="200", **detail) + 2
    )
    assert value(after, "http_request_duration_seconds_count", **detail) == (
        value(before, "http_request_duration_seconds_count", **detail) + 2
    )
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "http_requests_total", **unmatched) >= 1
    assert str(job.pk) not in text


def test_a_made_up_http_method_is_counted_as_other(client, metrics_token):
    before = scrape(client)

    client.generic("BREW", "/api/health/")

    after = scrape(client)
    labels = {"method": "other", "route": "health", "status": "405"}
    assert value(after, "http_requests_total", **labels) == (
        value(before, "http_requests_total", **labels) + 1
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRICS_ALLOWED_IPS": "10.0.0.0/8,not-an-address"}, "METRICS_ALLOWED_IPS must list"),
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 24"),
        ({"WORKER_METRICS_PORT": "9100"}, "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be plain or json"),
    ],
)
def test_bad_metrics_and_logging_settings_stop_the_process_by_name(env, message):
    started = start_settings(DEBUG="true", **env)

    assert started.returncode != 0
    assert message in started.stderr
