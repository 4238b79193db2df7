"""Following a job's live events (``mt_storage.events``): a backlog, then new events as they come, until
the job's terminal status. Plain async generators; the SSE and WebSocket routes only encode them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from mt_contracts.events import LiveEvent, StatusEvent, next_event_id
from mt_contracts.jobs import TERMINAL_STATUSES, Job
from mt_contracts.logs import timestamp
from mt_storage.events import JobEvents

KEEPALIVE = None  # what ``follow`` yields after ``keepalive_seconds`` without an event
_encoder = msgspec.json.Encoder()


class _Status(msgspec.Struct):
    status: str = ""


_status_decoder = msgspec.json.Decoder(_Status)


def is_terminal(event: LiveEvent) -> bool:
    """True for the status event that ends a job's stream."""
    return event.event == "status" and _status_decoder.decode(event.data).status in TERMINAL_STATUSES


async def follow(
    events: JobEvents,
    job_id: str,
    record: Callable[[], Awaitable[Job | None]],
    *,
    after: str | None,
    tail: int,
    keepalive_seconds: float,
) -> AsyncIterator[LiveEvent | None]:
    """Job ``job_id``'s events: those after ``after`` (a resume: exclusive, so no duplicate and no gap),
    or else the last ``tail``; then each new one as it is appended, ``KEEPALIVE`` after every quiet
    ``keepalive_seconds``; the terminal status event last.

    ``record`` reads the job record; it is consulted at the start and after each quiet period only, so a
    job whose stream lost its terminal event (trimmed or expired) still ends, with a status event built from
    the record.
    """
    if after is None:
        newest = await events.last(job_id, max(tail, 1))
        cursor = newest[-1].id if newest else "0-0"
        backlog = newest[-tail:] if tail > 0 else [event for event in newest[-1:] if is_terminal(event)]
        for event in backlog:
            yield event
            if is_terminal(event):
                return
    else:
        cursor = after
    block_ms: int | None = int(keepalive_seconds * 1000)
    job = await record()
    if job is None or job.status in TERMINAL_STATUSES:
        block_ms = None
    while True:
        batch = await events.after(job_id, cursor, block_ms=block_ms)
        for event in batch:
            yield event
            cursor = event.id
            if is_terminal(event):
                return
        if batch:
            continue
        if block_ms is None:
            if job is not None:
                status = StatusEvent(ts=timestamp(), job_id=job_id, status=job.status, error=job.error)
                yield LiveEvent(id=next_event_id(cursor), event="status", data=msgspec.Raw(_encoder.encode(status)))
            return
        yield KEEPALIVE
        job = await record()
        if job is None or job.status in TERMINAL_STATUSES:
            block_ms = None


async def has_events_after(events: JobEvents, job_id: str, after: str) -> bool:
    """True when the stream holds an event after ``after``."""
    return bool(await events.after(job_id, after, count=1))
