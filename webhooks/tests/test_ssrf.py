"""A webhook's URL cannot make us connect into our own network, however it is spelled.

The attempts are scripts/ssrf_check.py's, which `python -m scripts.ssrf_check` runs as well.
Each goes against real listeners on 127.0.0.1, 127.0.0.2 and ::1; the first tests show that
those listeners count connections and that WEBHOOK_ALLOWED_NETWORKS does let one through, so
the zeros after them are not vacuous.
"""

import ipaddress
import socket

import pytest

from scripts.ssrf_check import (
    ATTEMPTS,
    Listeners,
    ScriptedResolver,
    attempt_run,
    ssrf_bypass_report,
)
from webhooks import transport

BODY = b'{"event": "test"}'


@pytest.fixture(scope="module")
def listeners():
    with Listeners() as running:
        yield running


@pytest.fixture
def allow_127_0_0_1(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.1/32")]


def test_every_listener_counts_a_connection(listeners):
    for address in listeners.receivers:
        before = listeners.connections()

        with socket.create_connection((address, listeners.port), timeout=5):
            pass

        assert listeners.connections() == {**before, address: before[address] + 1}


def test_an_allowed_network_lets_a_webhook_reach_loopback(listeners, allow_127_0_0_1):
    before = listeners.connections()

    response = transport.post(f"http://127.0.0.1:{listeners.port}/", body=BODY, headers={})

    assert response.status == 200
    assert listeners.connections() == {**before, "127.0.0.1": before["127.0.0.1"] + 1}


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=lambda attempt: attempt.name)
def test_bypass_attempt_connects_to_no_forbidden_listener(attempt, listeners):
    outcome = attempt_run(attempt, listeners)

    assert outcome.as_expected, outcome.result
    assert outcome.connected == 0, outcome.connections


@pytest.mark.parametrize(
    "attempt",
    [attempt for attempt in ATTEMPTS if attempt.refused_without_dns],
    ids=lambda attempt: attempt.name,
)
def test_check_url_refuses_a_bypass_without_asking_dns(attempt):
    with pytest.raises(transport.Refused):
        transport.check_url(attempt.url.format(port=8080))


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/receive?token=abc",
        "http://93.184.216.34:8080/",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/",
    ],
)
def test_check_url_accepts_public_urls(url):
    transport.check_url(url)


def test_a_rebinding_dns_is_asked_once_per_webhook(listeners, settings):
    # Checked, the name is an allowed address; asked again, it would be another one. Only
    # loopback addresses here: tests never reach beyond this machine.
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.2/32")]
    resolver = ScriptedResolver(("127.0.0.2",), ("127.0.0.1",))
    before = listeners.connections()

    transport.post(
        f"http://rebinding.example:{listeners.port}/",
        body=BODY,
        headers={},
        timeout=1,
        resolve=resolver,
    )

    assert resolver.calls == 1
    assert listeners.connections() == {**before, "127.0.0.2": before["127.0.0.2"] + 1}


def test_a_rebinding_dns_cannot_move_the_connection_after_the_check(listeners, allow_127_0_0_1):
    resolver = ScriptedResolver(("127.0.0.1",), ("127.0.0.2",))
    before = listeners.connections()

    response = transport.post(
        f"http://rebinding.example:{listeners.port}/", body=BODY, headers={}, resolve=resolver
    )

    assert response.status == 200
    assert listeners.connections() == {**before, "127.0.0.1": before["127.0.0.1"] + 1}
    arrived = listeners.receivers["127.0.0.1"].requests[-1]
    assert arrived.headers["host"] == f"rebinding.example:{listeners.port}"


def test_no_bypass_attempt_connects():
    """The issue's figure, SSRF bypass attempts that connect: 0, as the script reports it."""
    report = ssrf_bypass_report()

    assert len(report.outcomes) >= 30
    assert report.connected == 0
    assert report.passed, [outcome.line() for outcome in report.outcomes if not outcome.ok]
