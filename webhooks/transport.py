"""Send a webhook over HTTP(S) without letting its URL reach into our own network (SSRF).

The invariant: a request goes only to an IP address this module has checked, and only when
every address the host resolved to passed. The host is resolved once; the socket is opened to
the checked address itself, so a DNS answer that changes between the check and the connection
(rebinding) cannot move the request. Redirects are never followed: a 3xx is returned as it is.
A request never outlives its timeout, however slowly the receiver answers, and never reads
more of the answer than asked.

Addresses must be public (`is_global`) and neither multicast nor reserved; IPv6 addresses that
carry an IPv4 address (mapped, compatible, 6to4, Teredo, NAT64) must carry a public one too.
settings.WEBHOOK_ALLOWED_NETWORKS lets chosen networks through (tests use loopback).
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2000
USER_AGENT = "jobsystem-webhooks/1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The transport's own: Host names the URL's host (the receiver's virtual host), and a
# caller's length or encoding could make one request read as two.
_TRANSPORT_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Resolver = Callable[[str, int], list[str]]

# Printable ASCII only: urlsplit silently drops tabs and newlines, and getaddrinfo folds
# fullwidth digits (U+FF10 to U+FF19) into ASCII ones, so they can spell 127.0.0.1.
_URL_CHARACTERS = re.compile(r"[\x21-\x7e]+")
_HOST_NAME = re.compile(r"[a-z0-9._-]+")
# Refused although `is_global` may let them through: recent Pythons count 192.0.0.9 and
# 192.0.0.10 (protocol anycast inside the IETF's 192.0.0.0/24) as global, and NAT64's
# local-use prefix hides its IPv4 address at an offset each operator picks, so it cannot be
# unwrapped and checked.
_ALWAYS_REFUSED = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("64:ff9b:1::/48"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_CLOUD_METADATA = frozenset(
    ipaddress.ip_address(text) for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# What to call an address in a refusal, first match wins.
_ADDRESS_KINDS = (
    ("is_loopback", "a loopback address"),
    ("is_unspecified", "the unspecified address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_reserved", "a reserved address"),
    ("is_private", "a private address"),
)


class _ReasonedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refused(_ReasonedError):
    """The URL may not be called; `reason` says why, in a sentence for its owner."""


class TransportError(_ReasonedError):
    """Resolving, connecting, sending or reading failed; `reason` says how."""


@dataclass(frozen=True)
class Response:
    """What the receiver answered, whatever its status: redirects are not followed."""

    status: int
    body: bytes  # at most max_response_bytes
    headers: dict[str, str]  # lower-case names
    latency_ms: int
    truncated: bool  # the receiver sent more than max_response_bytes


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    literal: _Address | None  # the host is an IP address, in one of the forms getaddrinfo reads


def check_url(url: str) -> None:
    """Raise Refused for a URL that can never be called, without asking DNS."""
    _url_target(url)


def post(
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float = 10.0,
    max_response_bytes: int = 65536,
    resolve: _Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """POST `body` to `url`; raise Refused before connecting anywhere not allowed.

    `timeout` bounds the whole request: connecting, the TLS handshake, sending and reading
    share what resolving left of it (getaddrinfo itself cannot be interrupted: the system's
    resolver timeouts apply). `resolve(host, port)` returns IP addresses (default:
    getaddrinfo); it is called once, and its answer is checked whole.
    """
    started = time.monotonic()
    target = _url_target(url)
    request_headers = _transport_headers(headers, body)
    if target.literal is not None:
        addresses = [target.literal]
    else:
        addresses = _resolved_addresses(target, resolve)
    allowed = settings.WEBHOOK_ALLOWED_NETWORKS
    for address in addresses:
        refusal = _address_refusal(address, allowed)
        if refusal:
            raise Refused(f"{target.host} resolves to {refusal}")

    tls = None
    if target.scheme == "https":
        tls = ssl_context or _default_tls()
    connection = _PinnedConnection(target, addresses, deadline=started + timeout, tls=tls)
    try:
        connection.request("POST", target.path, body=body, headers=request_headers)
        with connection.getresponse() as answer:
            # One byte past the cap tells a body that fills it exactly from a longer one.
            content = answer.read(max_response_bytes + 1)
    except (OSError, http.client.HTTPException) as error:
        raise _transport_failure(error, timeout) from error
    finally:
        connection.close()
    return Response(
        status=answer.status,
        body=content[:max_response_bytes],
        headers=_response_headers(answer),
        latency_ms=int((time.monotonic() - started) * 1000),
        truncated=len(content) > max_response_bytes,
    )


def _url_target(url: str) -> _Target:
    """Split `url` into what post() needs, or raise Refused for a URL that is never allowed."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if not _URL_CHARACTERS.fullmatch(url):
        raise Refused(
            "The URL contains spaces, control characters or non-ASCII characters: "
            "percent-encode them, and write international domain names in their xn-- form."
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise Refused(f"The URL is not valid: {error}.") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise Refused(f"Only http and https URLs can be called, not {parts.scheme or 'this'}.")
    if "@" in parts.netloc:
        raise Refused("The URL may not contain a user name or password.")
    host = parts.hostname
    if not host:
        raise Refused("The URL has no host.")
    if port is None:
        port = _DEFAULT_PORTS[parts.scheme]
    if not any(port in ports for ports in settings.WEBHOOK_ALLOWED_PORTS):
        raise Refused(f"Webhooks cannot be sent to port {port}.")

    literal = _host_literal(host, bracketed=parts.netloc.startswith("["))
    if literal is not None:
        refusal = _address_refusal(literal, settings.WEBHOOK_ALLOWED_NETWORKS)
        if refusal:
            raise Refused(f"The URL's host is {refusal}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(scheme=parts.scheme, host=host, port=port, path=path, literal=literal)


def _host_literal(host: str, *, bracketed: bool) -> _Address | None:
    """The IP address `host` stands for without DNS, or None for a name.

    getaddrinfo reads 2130706433, 0x7f.1, 0177.0.0.1 and 127.1 as 127.0.0.1, so the question
    goes to getaddrinfo itself (numeric only): whatever it would connect to is what we check.
    """
    if bracketed:
        if "%" in host:
            raise Refused("The URL's IPv6 address may not name a network interface (zone).")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise Refused("The URL's host is not a valid IPv6 address.") from None
    if not _HOST_NAME.fullmatch(host):
        raise Refused("The URL's host name contains characters host names do not have.")
    try:
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return ipaddress.ip_address(found[0][4][0])


def _resolved_addresses(target: _Target, resolve: _Resolver | None) -> list[_Address]:
    """Every address the host resolves to, asking DNS (or `resolve`) exactly once."""
    try:
        answer = (resolve or _resolve_host)(target.host, target.port)
    except OSError as error:
        raise TransportError(f"{target.host} could not be resolved: {error}.") from error
    if not answer:
        raise TransportError(f"{target.host} resolves to no address.")
    return [ipaddress.ip_address(text) for text in dict.fromkeys(answer)]


def _resolve_host(host: str, port: int) -> list[str]:
    """The addresses getaddrinfo gives for `host`, in its order of preference."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [sockaddr[0] for _family, _type, _proto, _name, sockaddr in found]


def _address_refusal(address: _Address, allowed: list[_Network]) -> str | None:
    """Why `address` may not be connected to, as the end of a sentence; None if it may be.

    An IPv6 address that carries an IPv4 one is judged on both, the carried one first so that
    the reason names what the packet would finally reach.
    """
    carried = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    for candidate in [*carried, address]:
        if _is_allowed(candidate, allowed) or _is_public(candidate):
            continue
        kind = _address_kind(candidate)
        if candidate is address:
            return f"{address}, {kind}."
        return f"{address}, which leads to {candidate}, {kind}."
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to `address` may be delivered to by a translator."""
    carried = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    # :: and ::1 are IPv6's own unspecified and loopback addresses, not IPv4-compatible ones.
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [found for found in carried if found is not None]


def _is_allowed(address: _Address, allowed: list[_Network]) -> bool:
    return any(address in network for network in allowed)


def _is_public(address: _Address) -> bool:
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not any(address in network for network in _ALWAYS_REFUSED)
    )


def _address_kind(address: _Address) -> str:
    if address in _CLOUD_METADATA:
        return "a cloud metadata address"
    for attribute, kind in _ADDRESS_KINDS:
        if getattr(address, attribute):
            return kind
    return "not a public address"


def _transport_headers(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    """The caller's headers over our defaults, plus the framing headers the transport owns."""
    owned = _TRANSPORT_HEADERS.intersection(name.lower() for name in headers)
    if owned:
        raise ValueError(f"The transport sets these headers itself: {', '.join(sorted(owned))}")
    given = {name.lower() for name in headers}
    defaults = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return {
        **{name: value for name, value in defaults.items() if name.lower() not in given},
        **headers,
        "Content-Length": str(len(body)),
        "Connection": "close",
    }


def _response_headers(answer: http.client.HTTPResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in answer.getheaders():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _transport_failure(error: Exception, timeout: float) -> TransportError:
    if isinstance(error, TimeoutError):
        return TransportError(f"No complete answer within {timeout:g} s.")
    if isinstance(error, ssl.SSLCertVerificationError):
        return TransportError(f"The TLS certificate was refused: {error.verify_message}.")
    if isinstance(error, ssl.SSLError):
        return TransportError(f"The TLS connection failed: {error.reason or error}.")
    if isinstance(error, http.client.HTTPException):
        return TransportError(f"The answer is not valid HTTP ({type(error).__name__}).")
    return TransportError(f"The connection failed: {error.strerror or error}.")


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """The system's trusted CAs, with hostname checks: loaded once per process."""
    return ssl.create_default_context()


def _time_left(deadline: float) -> float:
    """Seconds until `deadline`; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's time is up")
    return left


def _open_socket(addresses: list[_Address], port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first of `addresses` that accepts, before the deadline."""
    for address in addresses[:-1]:
        try:
            return _connect(address, port, deadline)
        except TimeoutError:
            raise  # the request's time is up: no address would get any
        except OSError:
            continue  # a host without IPv6 routes, say: the next address may answer
    return _connect(addresses[-1], port, deadline)


def _connect(address: _Address, port: int, deadline: float) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(_time_left(deadline))
        sock.connect((str(address), port))
        # As http.client does: headers and body go in two writes, which Nagle would delay.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to checked addresses only, every step within one deadline.

    http.client still writes the request (Host is the URL's host) and parses the answer; this
    class decides where the socket goes and how long each read and write may wait.
    """

    def __init__(
        self,
        target: _Target,
        addresses: list[_Address],
        *,
        deadline: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(target.host, target.port)
        # Host carries no port when it is the scheme's own, as browsers send it.
        self.default_port = _DEFAULT_PORTS[target.scheme]
        self.addresses = addresses
        self.deadline = deadline
        self.tls = tls
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)

    def connect(self) -> None:
        sock = _open_socket(self.addresses, self.port, self.deadline)
        if self.tls is not None:
            try:
                sock.settimeout(_time_left(self.deadline))
                # The certificate must name the URL's host, not the address we dialled.
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock

    def send(self, data: bytes) -> None:
        # sendall's timeout is per call on a TLS socket; a receiver that reads slowly could
        # otherwise hold us past the deadline.
        if self.sock is None:
            self.connect()
        remaining = memoryview(data)
        while remaining:
            self.sock.settimeout(_time_left(self.deadline))
            remaining = remaining[self.sock.send(remaining) :]


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading its socket only until the request's deadline."""

    def __init__(
        self, sock: socket.socket, *args: object, deadline: float, **kwargs: object
    ) -> None:
        super().__init__(sock, *args, **kwargs)
        # A socket timeout bounds each read, so a receiver that trickles a byte at a time
        # would keep a plain reader for ever; ours gives each read only the time left.
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


class _DeadlineReader(io.RawIOBase):
    """A socket's raw reader whose every read waits at most until the deadline.

    It wraps the reader http.client made rather than the socket, so the socket stays open
    while it is read from: http.client closes its own handle as soon as the answer begins.
    """

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float) -> None:
        self.raw = raw
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:
        self.sock.settimeout(_time_left(self.deadline))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()
