"""A real events process for tests, and a client that reads its stream frame by frame."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from rest_framework_simplejwt.tokens import AccessToken

from jobs.tests.live import subprocess_env, wait_for
from scripts import localredis
from scripts.sse import Frame, FrameParser
from scripts.stack import ManagedProcess, events_answer, events_process


class EventsProcess:
    """The Procfile's events process on a free port, against the test database."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.port = localredis.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess = events_process(
            {**subprocess_env(), **env}, workdir, self.port
        )
        wait_for(
            lambda: not self.process.alive or events_answer(self.url),
            timeout=30,
            message="the events process did not answer",
        )
        if not self.process.alive:
            pytest.fail(f"the events process exited:\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()


def token_for(user, lifetime: timedelta | None = None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


class StreamClient:
    """One open stream: read frames until a condition holds, within a time limit."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        self._parser = FrameParser()
        self.frames: list[Frame] = []

    def next_frame(self, deadline: float) -> Frame | None:
        """The next frame, or None if the stream ended; fail once the deadline passes."""
        for line in self._lines:
            frame = self._parser.feed(line)
            if frame is not None:
                self.frames.append(frame)
                return frame
            if time.monotonic() > deadline:
                break
        else:
            return None
        pytest.fail(f"no frame in time; so far: {self.frames}")

    def events(self, count: int, timeout: float = 5) -> list[Frame]:
        """The next `count` events (keep-alives skipped); fail if they do not come in time."""
        deadline = time.monotonic() + timeout
        events: list[Frame] = []
        while len(events) < count:
            frame = self.next_frame(deadline)
            if frame is None:
                pytest.fail(f"the stream ended after {events}")
            if not frame.is_keepalive:
                events.append(frame)
        return events

    def until(self, predicate, timeout: float = 5) -> Frame:
        deadline = time.monotonic() + timeout
        while (frame := self.next_frame(deadline)) is not None:
            if predicate(frame):
                return frame
        pytest.fail(f"the stream ended before the frame came: {self.frames}")


@contextmanager
def open_stream(
    base_url: str, token: str | None, path: str = "/api/events/", headers: dict | None = None
) -> Iterator[StreamClient]:
    """GET the stream; the connection closes on leaving the block."""
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    # Each frame has its read timeout: a keep-alive comes well within it.
    timeout = httpx.Timeout(10, read=10)
    with (
        httpx.Client(base_url=base_url, timeout=timeout) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        yield StreamClient(response)
