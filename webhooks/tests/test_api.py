"""The webhook endpoints' API, as a client sees it."""

import pytest

from webhooks.models import DeliveryAttempt, Endpoint

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/jobs"


def test_adding_an_endpoint_shows_its_secret_once(auth_client):
    created = auth_client.post("/api/webhooks/", {"url": URL}, format="json")

    assert created.status_code == 201
    assert created.data["secret"].startswith("whsec_")
    assert created.data["event_types"] == ["job.completed", "job.failed", "job.cancelled"]
    shown = auth_client.get(f"/api/webhooks/{created.data['id']}/")
    assert shown.status_code == 200
    assert "secret" not in shown.data
    assert "secret" not in auth_client.get("/api/webhooks/").data["results"][0]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/hook",
        "https://example.com:22/hook",
        "not a url",
    ],
)
def test_an_endpoint_that_could_reach_inside_is_refused_by_field(auth_client, url):
    answer = auth_client.post("/api/webhooks/", {"url": url}, format="json")

    assert answer.status_code == 400
    assert list(answer.data) == ["url"]


def test_unknown_event_types_are_refused(auth_client):
    answer = auth_client.post(
        "/api/webhooks/", {"url": URL, "event_types": ["job.exploded"]}, format="json"
    )

    assert answer.status_code == 400
    assert "event_types" in answer.data


def test_event_types_are_kept_once_each_in_order(auth_client):
    answer = auth_client.post(
        "/api/webhooks/",
        {"url": URL, "event_types": ["job.failed", "job.started", "job.failed"]},
        format="json",
    )

    assert answer.data["event_types"] == ["job.started", "job.failed"]


def test_a_user_has_a_limited_number_of_endpoints(auth_client, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    for _ in range(2):
        assert auth_client.post("/api/webhooks/", {"url": URL}, format="json").status_code == 201

    answer = auth_client.post("/api/webhooks/", {"url": URL}, format="json")

    assert answer.status_code == 409
    assert answer.data["code"] == "too_many_endpoints" or "endpoints" in str(answer.data)


def test_other_users_endpoints_are_not_found(auth_client, user_factory):
    from webhooks.endpoints import endpoint_create

    theirs = endpoint_create(owner=user_factory(), url=URL, event_types=["job.completed"])

    assert auth_client.get(f"/api/webhooks/{theirs.pk}/").status_code == 404
    assert auth_client.delete(f"/api/webhooks/{theirs.pk}/").status_code == 404
    assert auth_client.post(f"/api/webhooks/{theirs.pk}/rotate-secret/").status_code == 404
    assert auth_client.get("/api/webhooks/").data["results"] == []


def test_rotating_shows_the_new_secret_and_keeps_the_old_one_a_day(auth_client):
    created = auth_client.post("/api/webhooks/", {"url": URL}, format="json").data

    rotated = auth_client.post(f"/api/webhooks/{created['id']}/rotate-secret/")

    assert rotated.status_code == 200
    assert rotated.data["secret"] != created["secret"]
    assert rotated.data["previous_secret_expires_at"] is not None
    endpoint = Endpoint.objects.get(pk=created["id"])
    assert endpoint.previous_secret == created["secret"]


def test_an_endpoint_is_changed_and_deleted(auth_client):
    created = auth_client.post("/api/webhooks/", {"url": URL}, format="json").data
    address = f"/api/webhooks/{created['id']}/"

    changed = auth_client.patch(address, {"enabled": False, "description": "ci"}, format="json")
    assert (changed.status_code, changed.data["enabled"], changed.data["description"]) == (
        200,
        False,
        "ci",
    )
    assert auth_client.put(address, {"url": URL}, format="json").status_code == 405
    assert auth_client.delete(address).status_code == 204
    assert not Endpoint.objects.exists()


def test_redeliver_takes_an_event_or_a_time_not_both(auth_client):
    created = auth_client.post("/api/webhooks/", {"url": URL}, format="json").data
    address = f"/api/webhooks/{created['id']}/redeliver/"

    assert auth_client.post(address, {}, format="json").status_code == 400
    both = {"event_id": 1, "since": "2026-01-01T00:00:00Z"}
    assert auth_client.post(address, both, format="json").status_code == 400
    assert auth_client.post(address, {"event_id": "x"}, format="json").status_code == 400
    answer = auth_client.post(address, {"event_id": 1}, format="json")
    assert (answer.status_code, answer.data) == (202, {"queued": 0, "truncated": False})


def test_the_delivery_log_lists_attempts_newest_first(
    auth_client, verified_user, receiver, finished_job, settings
):
    import ipaddress

    from webhooks import delivery, fanout

    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.1/32")]
    receiver.answer = lambda received: (500, b"not today")
    created = auth_client.post("/api/webhooks/", {"url": receiver.url}).data
    job = finished_job()
    for endpoint_id in fanout.webhooks_fan_out(owner_id=verified_user.pk):
        delivery.webhooks_deliver(endpoint_id=endpoint_id)

    log = auth_client.get(f"/api/webhooks/{created['id']}/deliveries/")

    assert log.status_code == 200
    [entry] = log.data["results"]
    assert entry["status_code"] == 500
    assert entry["response_excerpt"] == "not today"
    assert entry["event_type"] == "job.completed"
    assert entry["job"] == str(job.pk)
    assert entry["delivery_status"] == "pending"
    assert entry["latency_ms"] >= 0
    assert DeliveryAttempt.objects.count() == 1


def test_a_submission_with_a_callback_shows_its_secret(auth_client):
    answer = auth_client.post(
        "/api/jobs/",
        {"name": "a", "job_type": "echo", "parameters": {}, "callback_url": URL},
        format="json",
    )

    assert answer.status_code == 201
    assert answer.data["callback_secret"].startswith("whsec_")
    assert Endpoint.objects.get(job_id=answer.data["id"]).url == URL


def test_a_submission_without_a_callback_has_a_null_secret(auth_client):
    answer = auth_client.post(
        "/api/jobs/", {"name": "a", "job_type": "echo", "parameters": {}}, format="json"
    )

    assert answer.data["callback_secret"] is None


def test_a_callback_to_a_private_address_is_refused(auth_client):
    answer = auth_client.post(
        "/api/jobs/",
        {"name": "a", "job_type": "echo", "parameters": {}, "callback_url": "http://10.0.0.1/"},
        format="json",
    )

    assert answer.status_code == 400
    assert list(answer.data) == ["callback_url"]


def test_bulk_submissions_take_a_callback_per_job(auth_client):
    jobs = [
        {"name": "a", "job_type": "echo", "parameters": {}, "callback_url": URL},
        {"name": "b", "job_type": "echo", "parameters": {}},
    ]

    answer = auth_client.post("/api/jobs/bulk/", {"jobs": jobs}, format="json")

    assert answer.status_code == 201
    first, second = answer.data["jobs"]
    assert first["callback_secret"].startswith("whsec_")
    assert second["callback_secret"] is None


def test_unverified_users_cannot_touch_webhooks(api_client, unverified_user):
    api_client.force_authenticate(unverified_user)

    assert api_client.get("/api/webhooks/").status_code == 403
