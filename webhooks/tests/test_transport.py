"""Delivering a webhook: what the receiver gets, what comes back, and how long it may take.

Receivers are real servers on 127.0.0.1, which WEBHOOK_ALLOWED_NETWORKS lets through here.
"""

import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from job_system.settings import env_port_ranges
from webhooks import transport
from webhooks.tests.servers import Receiver, reply

BODY = b'{"event": "job.completed"}'


@pytest.fixture(autouse=True)
def allow_loopback(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]


def resolves_to(*addresses: str):
    return lambda host, port: list(addresses)


def test_a_webhook_arrives_with_its_body_and_headers():
    with Receiver() as receiver:
        transport.post(
            f"http://127.0.0.1:{receiver.port}/hooks?source=jobs",
            body=BODY,
            headers={"X-Signature": "t=1,v1=abc"},
        )

    [request] = receiver.requests
    assert (request.method, request.target, request.body) == ("POST", "/hooks?source=jobs", BODY)
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "jobsystem-webhooks/1"
    assert request.headers["content-length"] == str(len(BODY))
    assert request.headers["connection"] == "close"
    assert request.headers["x-signature"] == "t=1,v1=abc"


def test_host_is_the_urls_host_not_the_address_connected_to():
    with Receiver() as receiver:
        transport.post(
            f"http://hooks.example.test:{receiver.port}/",
            body=BODY,
            headers={},
            resolve=resolves_to("127.0.0.1"),
        )

    assert receiver.requests[0].headers["host"] == f"hooks.example.test:{receiver.port}"


def test_a_callers_content_type_replaces_the_default():
    with Receiver() as receiver:
        transport.post(
            f"http://127.0.0.1:{receiver.port}/",
            body=b"a=1",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    assert receiver.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize("name", ["Host", "content-length", "Connection", "Transfer-Encoding"])
def test_headers_the_transport_sets_cannot_be_given(name):
    with Receiver() as receiver, pytest.raises(ValueError, match=name.lower()):
        transport.post(f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={name: "x"})

    assert receiver.connections == 0


def test_the_answer_comes_back_with_status_headers_and_latency():
    def respond(conn, request):
        reply(conn, 202, headers={"X-Receipt": "r-1", "Set-Cookie": "a=1"}, body=b"queued")

    with Receiver(respond) as receiver:
        response = transport.post(f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={})

    assert (response.status, response.body, response.truncated) == (202, b"queued", False)
    assert response.headers["x-receipt"] == "r-1"
    assert response.headers["content-length"] == "6"
    assert 0 <= response.latency_ms < 5000


def test_an_error_status_is_returned_not_raised():
    with Receiver(lambda conn, request: reply(conn, 500, body=b"boom")) as receiver:
        response = transport.post(f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={})

    assert (response.status, response.body) == (500, b"boom")


def test_a_long_answer_is_cut_at_max_response_bytes():
    size = 10 * 1024 * 1024

    def respond(conn, request):
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            conn.sendall(chunk)

    with Receiver(respond) as receiver:
        started = time.monotonic()
        response = transport.post(f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={})
        elapsed = time.monotonic() - started

    assert len(response.body) == 65536
    assert response.truncated
    assert elapsed < 2


def test_an_answer_as_long_as_max_response_bytes_is_whole():
    with Receiver(lambda conn, request: reply(conn, body=b"12345")) as receiver:
        response = transport.post(
            f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={}, max_response_bytes=5
        )

    assert (response.body, response.truncated) == (b"12345", False)


def test_a_receiver_that_never_answers_times_out():
    def respond(conn, request):
        conn.recv(1)  # until the client gives up and closes

    with Receiver(respond) as receiver:
        started = time.monotonic()
        with pytest.raises(transport.TransportError, match="within 1 s"):
            transport.post(f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={}, timeout=1)

    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Slow: ", id="in the headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", id="in the body"),
    ],
)
def test_a_receiver_that_trickles_is_cut_at_the_deadline(head):
    def respond(conn, request):
        conn.sendall(head)
        # A byte well within every single read's timeout, so only a deadline across reads
        # ends the request; a client without one would wait the whole 15 seconds.
        for _ in range(75):
            conn.sendall(b"a")
            time.sleep(0.2)

    with Receiver(respond) as receiver:
        started = time.monotonic()
        with pytest.raises(transport.TransportError, match="within 1 s"):
            transport.post(f"http://127.0.0.1:{receiver.port}/", body=BODY, headers={}, timeout=1)

    assert time.monotonic() - started < 2


def test_a_refused_connection_is_a_transport_error():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound but not listening: connections are refused

        with pytest.raises(transport.TransportError, match="connection failed"):
            transport.post(f"http://127.0.0.1:{port}/", body=BODY, headers={})


def test_a_name_that_does_not_resolve_is_a_transport_error():
    def no_such_name(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(transport.TransportError, match=r"hooks\.example\.test could not be"):
        transport.post("http://hooks.example.test/", body=BODY, headers={}, resolve=no_such_name)


def test_a_name_with_no_address_is_a_transport_error():
    with pytest.raises(transport.TransportError, match="no address"):
        transport.post("http://hooks.example.test/", body=BODY, headers={}, resolve=resolves_to())


def test_the_systems_resolver_is_used_by_default(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS += [ipaddress.ip_network("::1/128")]

    with Receiver() as receiver:
        response = transport.post(f"http://localhost:{receiver.port}/", body=BODY, headers={})

    assert response.status == 200


def test_the_next_address_is_tried_when_one_refuses():
    with Receiver() as receiver:
        response = transport.post(
            f"http://hooks.example.test:{receiver.port}/",
            body=BODY,
            headers={},
            resolve=resolves_to("127.0.0.3", "127.0.0.1"),  # nothing listens on 127.0.0.3
        )

    assert response.status == 200


def test_ports_outside_webhook_allowed_ports_are_refused(settings):
    settings.WEBHOOK_ALLOWED_PORTS = [range(443, 444)]

    transport.check_url("https://hooks.example.com/")
    for url in ["http://hooks.example.com/", "https://hooks.example.com:8443/"]:
        with pytest.raises(transport.Refused, match="port"):
            transport.check_url(url)


def test_webhook_allowed_ports_reads_ports_and_ranges(monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_PORTS", "80, 443,1024-65535")

    assert env_port_ranges("WEBHOOK_ALLOWED_PORTS", "") == [
        range(80, 81),
        range(443, 444),
        range(1024, 65536),
    ]


@pytest.mark.parametrize("value", ["http", "0", "65536", "2000-1000", "80-", "-80", "1-2-3"])
def test_webhook_allowed_ports_refuses_what_is_not_a_port(monkeypatch, value):
    monkeypatch.setenv("WEBHOOK_ALLOWED_PORTS", value)

    with pytest.raises(ImproperlyConfigured, match="WEBHOOK_ALLOWED_PORTS"):
        env_port_ranges("WEBHOOK_ALLOWED_PORTS", "")


# HTTPS, against a certificate for webhook.test made for the test run. The openssl command
# makes it: the `cryptography` package is not among our dependencies.


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate with")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-nodes", "-days", "1"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    command += ["-subj", "/CN=webhook.test", "-addext", "subjectAltName=DNS:webhook.test"]
    command += ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603 - our own command line
    return cert, key


@pytest.fixture
def tls_receiver(certificate):
    names_asked = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    context.sni_callback = lambda sock, name, context: names_asked.append(name)
    with Receiver(tls=context) as receiver:
        receiver.names_asked = names_asked
        yield receiver


@pytest.fixture
def trusting(certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_https_checks_the_certificate_against_the_urls_host(tls_receiver, trusting):
    response = transport.post(
        f"https://webhook.test:{tls_receiver.port}/",
        body=BODY,
        headers={},
        resolve=resolves_to("127.0.0.1"),
        ssl_context=trusting,
    )

    assert response.status == 200
    assert tls_receiver.names_asked == ["webhook.test"]
    assert tls_receiver.requests[0].headers["host"] == f"webhook.test:{tls_receiver.port}"


@pytest.mark.parametrize(
    ("host", "trust_test_certificate"),
    [
        pytest.param("other.test", True, id="a certificate for another host"),
        pytest.param("webhook.test", False, id="a certificate no system authority signed"),
    ],
)
def test_https_refuses(host, trust_test_certificate, tls_receiver, trusting):
    with pytest.raises(transport.TransportError, match="certificate"):
        transport.post(
            f"https://{host}:{tls_receiver.port}/",
            body=BODY,
            headers={},
            resolve=resolves_to("127.0.0.1"),
            ssl_context=trusting if trust_test_certificate else None,
        )

    assert tls_receiver.requests == []
