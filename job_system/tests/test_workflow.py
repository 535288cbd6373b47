"""A newcomer's first session, through the HTTP API, with a real worker sending the email."""

import re

import pytest
from rest_framework.test import APIClient

from jobs.tests.live import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EMAIL = "newcomer@example.com"
PASSWORD = "a sturdy passphrase 4 jobs"


def emailed_code(mailbox, address: str) -> str:
    """Return the newest 6-digit code the worker emailed to this address."""

    def find():
        for message in sorted(mailbox.glob("*.log"), reverse=True):
            text = message.read_text()
            if f"To: {address}" in text and (match := re.search(r"^(\d{6})$", text, re.M)):
                return match.group(1)
        return None

    return wait_for(find, timeout=20, message=f"no code was emailed to {address}")


def test_register_confirm_login_submit_and_fetch_the_result(live_worker, celery_log_dir):
    client = APIClient()

    registered = client.post("/api/register/", {"email": EMAIL, "password": PASSWORD})
    assert registered.status_code == 201
    assert client.post("/api/login/", {"email": EMAIL, "password": PASSWORD}).status_code == 403

    code = emailed_code(celery_log_dir / "emails", EMAIL)
    assert client.post("/api/verify-otp/", {"email": EMAIL, "otp": code}).status_code == 200

    tokens = client.post("/api/login/", {"email": EMAIL, "password": PASSWORD}).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.get("/api/me/").json()["is_verified"] is True

    job = client.post(
        "/api/jobs/",
        {"name": "count", "job_type": "word_count", "parameters": {"text": "one two two"}},
        format="json",
    ).json()
    finished = wait_for(
        lambda: client.get(f"/api/jobs/{job['id']}/").json()["status"] == "completed",
        timeout=20,
    )
    assert finished

    result = client.get(f"/api/jobs/{job['id']}/result/").json()
    assert result["output"]["words"] == 3
    listed = client.get("/api/job-results/", {"job": job["id"]}).json()["results"]
    assert [r["id"] for r in listed] == [result["id"]]


def test_health_reports_database_redis_and_workers(live_worker, api_client):
    response = api_client.get("/api/health/")

    assert response.status_code == 200
    assert response.json()["database"] == "ok"
    assert response.json()["redis"] == "ok"
    assert response.json()["workers"] >= 1


def test_health_is_503_when_redis_is_down(api_client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = api_client.get("/api/health/")

    assert response.status_code == 503
    assert response.json()["redis"].startswith("error")
    assert response.json()["status"] == "unavailable"
