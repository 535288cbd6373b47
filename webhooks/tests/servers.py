"""Real loopback servers that receive webhooks in tests, and count every connection they accept.

A Receiver reads each request and hands it, with the connection, to a `respond` function, so a
test decides how the receiver answers: properly, never, slowly, at length, or over TLS.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Respond = Callable[[socket.socket, Request], None]


def read_request(conn: socket.socket) -> Request:
    """Read one HTTP request with a Content-Length body (what the transport sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _received(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", 0)):
        body += _received(conn)
    return Request(method=method, target=target, headers=headers, body=body)


def _received(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ConnectionError("the client closed the connection before its request ended")
    return chunk


def reply(
    conn: socket.socket,
    status: int = 200,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"ok",
) -> None:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def answer_as_asked(conn: socket.socket, request: Request) -> None:
    """Answer 200, or the `status` (and `location`) that the request's query string asks for."""
    query = parse_qs(urlsplit(request.target).query)
    status = int(query.get("status", ["200"])[0])
    headers = {"Location": query["location"][0]} if "location" in query else {}
    reply(conn, status, headers=headers)


class Receiver:
    """A TCP server on a loopback address, in threads of its own, for a `with` block."""

    def __init__(
        self,
        respond: Respond = answer_as_asked,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.respond = respond
        self.tls = tls
        self.requests: list[Request] = []
        self._accepted = 0
        self._sentinels: set[tuple[str, int]] = set()
        self._seen: set[tuple[str, int]] = set()
        self._changed = threading.Condition()
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.receiver = self
        self.host = host
        self.port: int = self._server.server_address[1]
        # A short poll, so that leaving the `with` block takes milliseconds, not half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    @property
    def connections(self) -> int:
        """Connections accepted so far; call settle() first to count those still queued."""
        with self._changed:
            return self._accepted

    def settle(self, timeout: float = 5.0) -> None:
        """Return once every connection made before this call has been accepted and counted.

        A client's connect() returns once the kernel has queued the connection, maybe before
        our thread accepts it; the queue is first in, first out, so once a connection of our
        own comes out of it, every earlier one has.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sentinel:
            sentinel.bind((self.host, 0))
            marker = sentinel.getsockname()[:2]
            with self._changed:
                self._sentinels.add(marker)
            sentinel.settimeout(timeout)
            sentinel.connect((self.host, self.port))
            with self._changed:
                if not self._changed.wait_for(lambda: marker in self._seen, timeout):
                    raise TimeoutError(f"{self.host}:{self.port} accepts no connection")

    def _count(self, client_address: tuple) -> bool:
        """Count an accepted connection; False for our own sentinel, which is not served."""
        marker = client_address[:2]
        with self._changed:
            if marker in self._sentinels:
                self._seen.add(marker)
                self._changed.notify_all()
                return False
            self._accepted += 1
            return True

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = read_request(conn)
            self.requests.append(request)
            self.respond(conn, request)
        except OSError:
            pass  # The client left, or refused our certificate: tests assert on what it saw.
        finally:
            conn.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    # A respond() that never answers must not hold up the end of the test.
    block_on_close = False
    receiver: Receiver

    def verify_request(self, request: object, client_address: tuple) -> bool:
        return self.receiver._count(client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.receiver._serve(self.request)
