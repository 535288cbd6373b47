"""Reading Server-Sent Events line by line, for the tests and the events bench.

A client that keeps the comments too: the keep-alives are part of what the tests check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Frame:
    """One dispatched block of lines: an event (id, event, data) or only a comment."""

    id: int | None = None
    event: str | None = None
    data: Any = None
    comment: str | None = None

    @property
    def is_keepalive(self) -> bool:
        return self.comment is not None and self.event is None


class FrameParser:
    """Feed it the stream's lines without their line ends; it returns each finished frame."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> Frame | None:
        if line == "":
            fields, self._fields = self._fields, {}
            if not fields or set(fields) == {"retry"}:
                return None
            data = fields.get("data")
            return Frame(
                id=int(fields["id"]) if "id" in fields else None,
                event=fields.get("event"),
                data=json.loads(data) if data is not None else None,
                comment=fields.get(""),
            )
        name, _, value = line.partition(":")
        self._fields[name] = value.removeprefix(" ")
        return None
