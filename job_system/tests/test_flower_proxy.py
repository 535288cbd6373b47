"""Who gets through /flower/ to Flower, and what stays behind (job_system.flower_proxy).

Here Flower is a listening socket that notes whether anything reached it, or a closed port;
jobs/tests/test_flower.py puts a real Flower behind the proxy.
"""

import socket

import pytest

from job_system.throttling import CountingRateThrottle
from scripts.localredis import free_port

# Throttle counts are per user id, and ids repeat between tests.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_cache_keys")]

BROWSER = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def listening_flower(settings):
    """A socket where Flower would listen: accept() tells whether a request was passed on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        settings.FLOWER_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
        yield listener


def reached(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


@pytest.fixture
def stopped_flower(settings) -> None:
    settings.FLOWER_URL = f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def staff(user_factory):
    return user_factory(is_staff=True)


def test_an_anonymous_browser_is_sent_to_the_admin_login(client, listening_flower):
    response = client.get("/flower/tasks?state=FAILURE", **BROWSER)

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/flower/tasks%3Fstate%3DFAILURE"
    assert not reached(listening_flower)


@pytest.mark.parametrize(
    "path",
    [
        "api/workers",
        "api/tasks",
        "metrics",
        "healthcheck",
        "workers?json=1",
        "static/js/flower.js",
    ],
)
def test_anonymous_requests_other_than_pages_get_403_and_never_reach_flower(
    client, listening_flower, path
):
    response = client.get(f"/flower/{path}")

    assert response.status_code == 403
    assert response.json()["code"] == "not_authenticated"
    assert not reached(listening_flower)


def test_an_anonymous_post_gets_403(client, listening_flower):
    response = client.post("/flower/api/task/revoke/x", HTTP_SEC_FETCH_SITE="same-origin")

    assert response.status_code == 403
    assert not reached(listening_flower)


def test_a_user_who_is_not_staff_is_refused(client, listening_flower, verified_user):
    client.force_login(verified_user)

    assert client.get("/flower/api/workers").json()["code"] == "permission_denied"
    # The admin's login page tells them they are logged in without access.
    assert client.get("/flower/", **BROWSER)["Location"].startswith("/admin/login/")
    assert not reached(listening_flower)


def test_a_deactivated_staff_user_is_refused(client, listening_flower, staff):
    client.force_login(staff)
    staff.is_active = False
    staff.save()

    assert client.get("/flower/api/workers").status_code == 403
    assert not reached(listening_flower)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"HTTP_SEC_FETCH_SITE": "cross-site"}, id="cross-site"),
        pytest.param({"HTTP_SEC_FETCH_SITE": "same-site"}, id="same-site"),
        pytest.param({"HTTP_ORIGIN": "https://evil.example"}, id="other-origin"),
        pytest.param({}, id="no-origin"),
    ],
)
def test_a_post_from_another_site_is_refused(client, listening_flower, staff, headers):
    client.force_login(staff)

    response = client.post("/flower/api/task/revoke/x", **headers)

    assert response.status_code == 403
    assert response.json()["code"] == "cross_origin"
    assert not reached(listening_flower)


@pytest.mark.parametrize(
    "path",
    [
        "metrics",
        "healthcheck",
        "metrics/",
        "healthcheck?x=1",
        "%6detrics",
        "static/../metrics",
        "./metrics",
        "/metrics",
        "api//workers",
    ],
)
def test_flowers_unguarded_pages_are_not_passed_on_even_for_staff(
    client, listening_flower, staff, path
):
    client.force_login(staff)

    assert client.get(f"/flower/{path}").status_code == 404
    assert not reached(listening_flower)


def test_only_get_head_and_post_are_passed_on(client, listening_flower, staff):
    client.force_login(staff)

    assert client.delete("/flower/api/workers").status_code == 405
    assert client.put("/flower/api/workers").status_code == 405
    assert not reached(listening_flower)


def test_an_unreachable_flower_is_a_502(client, stopped_flower, staff):
    client.force_login(staff)

    response = client.get("/flower/api/workers")

    assert response.status_code == 502
    assert response.json()["code"] == "flower_unreachable"


def test_each_staff_user_is_throttled(client, stopped_flower, staff, user_factory, monkeypatch):
    rates = {**CountingRateThrottle.THROTTLE_RATES, "flower": "2/min"}
    monkeypatch.setattr(CountingRateThrottle, "THROTTLE_RATES", rates)
    client.force_login(staff)

    statuses = [client.get("/flower/api/workers").status_code for _ in range(3)]
    refused = client.get("/flower/api/workers")
    client.force_login(user_factory(is_staff=True))
    other = client.get("/flower/api/workers")

    assert statuses == [502, 502, 429]  # 502: Flower is not running, but the request counted
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) >= 1
    assert other.status_code == 502
