"""A sans-IO reader of ``text/event-stream`` (WHATWG HTML, "Server-sent events"): feed it lines, take
complete events."""

from __future__ import annotations

import msgspec


class SseEvent(msgspec.Struct, frozen=True):
    """One dispatched event: ``id`` (``""`` when the frame had none), ``event`` its type, ``data`` its lines
    joined by ``\\n``."""

    id: str
    event: str
    data: str


class SseParser:
    """Turns lines (without their line ending) into events; comments (``: keep-alive``) are dropped."""

    def __init__(self) -> None:
        self._id = ""
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        """The event this line completes (a blank line after data), else ``None``."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(id=self._id, event=self._event or "message", data="\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
