"""The SSE reader against the frames the API writes (and the spec's corner cases)."""

from __future__ import annotations

from mt_client.sse import SseEvent, SseParser


def _parse(text: str) -> list[SseEvent]:
    parser = SseParser()
    return [event for line in text.split("\n") if (event := parser.feed(line)) is not None]


def test_frames_comments_and_multiline_data() -> None:
    text = (
        ": keep-alive\n\n"
        'id: 1-0\nevent: log\ndata: {"a":1}\n\n'
        "id: 2-0\nevent: progress\ndata: one\ndata: two\n\n"
        "event: status\ndata:x\n\n"
        "\n"
    )
    assert _parse(text) == [
        SseEvent(id="1-0", event="log", data='{"a":1}'),
        SseEvent(id="2-0", event="progress", data="one\ntwo"),
        SseEvent(id="2-0", event="status", data="x"),  # the last id carries over, as the spec says
    ]


def test_event_type_defaults_to_message_and_resets() -> None:
    assert _parse("event: log\n\ndata: a\n\n") == [SseEvent(id="", event="message", data="a")]
