"""Try to make a webhook reach our own network, and count the attempts that connect.

Starts listeners on 127.0.0.1, 127.0.0.2 and ::1 (one port for all; ::1 where the host has
IPv6), then sends a webhook through webhooks.transport to each URL in ATTEMPTS: loopback in
every spelling, private and cloud metadata addresses, DNS answers that lie or change,
redirects, and forbidden ports, schemes and characters. A listener outside the attempt's
allowed networks that accepts a connection is a bypass. Prints the figure, and exits non-zero
if any attempt connected or did not end as it should.

    python -m scripts.ssrf_check [--verbose]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.test import override_settings

from webhooks import transport
from webhooks.tests.servers import Receiver

LISTENER_ADDRESSES = ("127.0.0.1", "127.0.0.2", "::1")
LOOPBACK = ("127.0.0.1/32",)
# Answers sent by a DNS that lies: a public address (example.com's old one) beside loopback.
PUBLIC_ADDRESS = "93.184.216.34"


@dataclass(frozen=True)
class Attempt:
    name: str
    url: str  # {port} stands for the listeners' port
    # A DNS that gives these answers in turn (ScriptedResolver); empty: the system's resolver.
    answers: tuple[tuple[str, ...], ...] = ()
    # WEBHOOK_ALLOWED_NETWORKS for the attempt; listeners inside it may be reached.
    allowed: tuple[str, ...] = ()
    # None: the transport must refuse the URL. A status: the allowed receiver's answer, which
    # the transport must return as it is (a redirect is not followed).
    expect_status: int | None = None
    # The host is a name only the system's resolver turns into an address.
    system_dns: bool = False

    @property
    def refused_without_dns(self) -> bool:
        """Whether check_url alone, which asks no DNS, must refuse this URL."""
        return self.expect_status is None and not self.answers and not self.system_dns


def redirect(status: int) -> Attempt:
    return Attempt(
        f"{status} redirect from an allowed receiver to 127.0.0.2",
        f"http://127.0.0.1:{{port}}/?status={status}&location=http://127.0.0.2:{{port}}/",
        allowed=LOOPBACK,
        expect_status=status,
    )


ATTEMPTS = (
    Attempt("loopback", "http://127.0.0.1:{port}/"),
    Attempt("another loopback address", "http://127.0.0.2:{port}/"),
    Attempt("localhost, resolved by the system", "http://localhost:{port}/", system_dns=True),
    Attempt("decimal", "http://2130706433:{port}/"),
    Attempt("octal, dotted", "http://0177.0.0.1:{port}/"),
    Attempt("octal, whole", "http://017700000001:{port}/"),
    Attempt("hexadecimal, whole", "http://0x7f000001:{port}/"),
    Attempt("hexadecimal, dotted", "http://0x7f.0.0.1:{port}/"),
    Attempt("short form", "http://127.1:{port}/"),
    Attempt("fullwidth digits", "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/"),
    Attempt("unspecified IPv4", "http://0.0.0.0:{port}/"),
    Attempt("zero", "http://0:{port}/"),
    Attempt("unspecified IPv6", "http://[::]:{port}/"),
    Attempt("IPv6 loopback", "http://[::1]:{port}/"),
    Attempt("IPv4-mapped IPv6", "http://[::ffff:127.0.0.1]:{port}/"),
    Attempt("IPv4-mapped IPv6, in hex", "http://[::ffff:7f00:1]:{port}/"),
    Attempt("IPv4-mapped IPv6, in full", "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/"),
    Attempt("IPv4-compatible IPv6", "http://[::127.0.0.1]:{port}/"),
    Attempt("NAT64", "http://[64:ff9b::7f00:1]:{port}/"),
    Attempt("6to4 around loopback", "http://[2002:7f00:1::]:{port}/"),
    Attempt("6to4 around a private address", "http://[2002:a00:1::]/"),
    Attempt("Teredo to loopback", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/"),
    Attempt("IPv6 zone", "http://[fe80::1%25lo]:{port}/"),
    Attempt("AWS metadata", "http://169.254.169.254/latest/meta-data/"),
    Attempt("AWS metadata, IPv6", "http://[fd00:ec2::254]/latest/meta-data/"),
    Attempt("AWS metadata, IPv4-mapped", "http://[::ffff:169.254.169.254]/latest/meta-data/"),
    Attempt("Alibaba metadata", "http://100.100.100.200/latest/meta-data/"),
    Attempt("private 10/8", "http://10.0.0.1/"),
    Attempt("private 192.168/16", "http://192.168.1.1/"),
    Attempt("private 172.16/12", "http://172.16.0.1/"),
    Attempt("carrier-grade NAT", "http://100.64.0.1/"),
    Attempt("IETF protocol assignments", "http://192.0.0.9/"),
    Attempt("benchmarking", "http://198.18.0.1/"),
    Attempt("reserved 240/4", "http://240.0.0.1/"),
    Attempt("this network 0/8", "http://0.1.2.3/"),
    Attempt("broadcast", "http://255.255.255.255/"),
    Attempt("multicast", "http://224.0.0.1/"),
    Attempt("IPv6 multicast", "http://[ff02::1]/"),
    Attempt("IPv6 link-local", "http://[fe80::1]/"),
    Attempt("IPv6 unique local", "http://[fc00::1]/"),
    Attempt(
        "a name that resolves to loopback",
        "http://127.0.0.1.nip.io:{port}/",
        answers=(("127.0.0.1",),),
    ),
    Attempt(
        "a name that resolves to IPv4-mapped loopback",
        "http://mapped.example:{port}/",
        answers=(("::ffff:127.0.0.1",),),
    ),
    Attempt(
        "a name that resolves to a public address and loopback",
        "http://mixed.example:{port}/",
        answers=((PUBLIC_ADDRESS, "127.0.0.1"),),
    ),
    Attempt(
        "DNS rebinding: 127.0.0.1 when checked, 127.0.0.2 after",
        "http://rebinding.example:{port}/",
        answers=(("127.0.0.1",), ("127.0.0.2",)),
        allowed=LOOPBACK,
        expect_status=200,
    ),
    Attempt("user and password", "http://user:pass@127.0.0.1:{port}/"),
    Attempt("a host name before @", "http://example.com@127.0.0.1:{port}/"),
    Attempt("backslash before @", "http://example.com\\@127.0.0.1:{port}/"),
    Attempt("SSH port", "http://example.com:22/"),
    Attempt("SMTP port", "http://example.com:25/"),
    Attempt("port 0", "http://example.com:0/"),
    Attempt("gopher", "gopher://127.0.0.1:{port}/_POST%20/"),
    Attempt("file", "file:///etc/passwd"),
    Attempt("ftp", "ftp://127.0.0.1:{port}/"),
    Attempt("no scheme's slashes", "http:127.0.0.1:{port}/"),
    Attempt("header injection", "http://example.com/\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
    Attempt("tab in the host", "http://127.0.0.1\t.example.com:{port}/"),
    Attempt("a URL over 2,000 characters", "http://example.com/" + "a" * 2000),
    *(redirect(status) for status in (301, 302, 303, 307, 308)),
)


class ScriptedResolver:
    """A DNS that gives its answers in turn, the last one ever after, and counts questions."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return list(answer)


class Listeners:
    """Receivers on LISTENER_ADDRESSES, all on one port, for a `with` block."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.receivers: dict[str, Receiver] = {}
        self.port = 0

    def __enter__(self) -> Listeners:
        addresses = [address for address in LISTENER_ADDRESSES if _can_listen(address)]
        for _ in range(20):
            bound = [Receiver(host=addresses[0])]
            try:
                bound += [Receiver(host=address, port=bound[0].port) for address in addresses[1:]]
            except OSError:
                for receiver in bound:
                    receiver.close()
                continue  # another program holds that port on one address: take another
            for receiver in bound:
                self.receivers[receiver.host] = self._stack.enter_context(receiver)
            self.port = bound[0].port
            return self
        raise OSError("found no port free on every loopback address")

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def connections(self) -> dict[str, int]:
        """Connections each listener has accepted, counting those the kernel still queues."""
        for receiver in self.receivers.values():
            receiver.settle()
        return {address: receiver.connections for address, receiver in self.receivers.items()}


def _can_listen(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Outcome:
    attempt: Attempt
    result: str
    as_expected: bool
    connections: dict[str, int] = field(default_factory=dict)  # per listener, this attempt
    connected: int = 0  # connections to listeners the attempt was not allowed to reach

    @property
    def ok(self) -> bool:
        return self.as_expected and not self.connected

    def line(self) -> str:
        verdict = "ok  " if self.ok else "FAIL"
        reached = {address: count for address, count in self.connections.items() if count}
        return f"{verdict} {self.attempt.name}: {self.result}" + (
            f" (connections: {reached})" if reached else ""
        )


def attempt_run(attempt: Attempt, listeners: Listeners) -> Outcome:
    """Send one attempt's webhook and see which listeners it reached."""
    allowed = [ipaddress.ip_network(text) for text in attempt.allowed]
    resolve = ScriptedResolver(*attempt.answers) if attempt.answers else None
    before = listeners.connections()
    with override_settings(WEBHOOK_ALLOWED_NETWORKS=allowed):
        try:
            response = transport.post(
                attempt.url.format(port=listeners.port),
                body=b'{"event": "ssrf-check"}',
                headers={},
                timeout=5,
                resolve=resolve,
            )
        except transport.Refused as refusal:
            result, as_expected = f"refused: {refusal.reason}", attempt.expect_status is None
        except transport.TransportError as failure:
            result, as_expected = f"failed: {failure.reason}", False
        else:
            result = f"answered {response.status}"
            as_expected = response.status == attempt.expect_status
    after = listeners.connections()
    connections = {address: after[address] - before[address] for address in after}
    forbidden = [
        address
        for address in connections
        if not any(ipaddress.ip_address(address) in network for network in allowed)
    ]
    return Outcome(
        attempt=attempt,
        result=result,
        as_expected=as_expected,
        connections=connections,
        connected=sum(connections[address] for address in forbidden),
    )


@dataclass(frozen=True)
class Report:
    outcomes: list[Outcome]

    @property
    def connected(self) -> int:
        return sum(outcome.connected for outcome in self.outcomes)

    @property
    def passed(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)


def ssrf_bypass_report() -> Report:
    """Run every attempt against fresh listeners. Needs Django's settings."""
    with Listeners() as listeners:
        return Report([attempt_run(attempt, listeners) for attempt in ATTEMPTS])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every attempt's outcome")
    args = parser.parse_args()
    # The settings' defaults, as in production, not a developer's .env.
    os.environ["ENV_FILE"] = os.devnull
    os.environ.setdefault(
        "SECRET_KEY", "ssrf-check-only-secret-key-not-for-any-deployment-4e7a90d2c15b"
    )
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "job_system.settings")

    import django

    django.setup()
    report = ssrf_bypass_report()
    for outcome in report.outcomes:
        if args.verbose or not outcome.ok:
            print(outcome.line())
    print(f"SSRF bypass attempts: {len(report.outcomes)}, connected: {report.connected}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
