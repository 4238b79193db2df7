"""Live job events in Redis: one capped Redis Stream per job, so the API and the workers need not share a
disk to stream logs.

The workers publish each ``logs.jsonl`` line with ``LivePublisher``, their own and those their training
processes hand over on stdout (the processes never talk to Redis); ``JobStore`` adds a ``status`` event in
the same transaction as every status change. Entry ids are Redis's own, monotonic per stream, and serve as the
events' ids for resuming.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import redis
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from mt_contracts.events import EVENT_KINDS, EventKind, LiveEvent, StatusEvent
from mt_contracts.jobs import Job
from mt_contracts.logs import timestamp

logger = logging.getLogger(__name__)

EVENTS_PREFIX = "mt:events:"
# Entries kept per job (approximately: Redis trims whole nodes). A resume older than this starts at the
# oldest entry kept; logs.jsonl keeps every line.
STREAM_MAXLEN = 10_000
# A stream entry's fields: ``kind`` (log, progress or status) and ``data`` (the JSON payload).
EntryFields = dict[FieldT, EncodableT]
_KIND = b"kind"
_DATA = b"data"
_encoder = msgspec.json.Encoder()


class _LineEvent(msgspec.Struct):
    event: str = ""


_line_decoder = msgspec.json.Decoder(_LineEvent)


def stream_key(job_id: str) -> str:
    """The Redis key of job ``job_id``'s event stream."""
    return f"{EVENTS_PREFIX}{job_id}"


def line_kind(line: bytes) -> EventKind:
    """``progress`` for a progress log line, else ``log``."""
    try:
        event = _line_decoder.decode(line).event
    except msgspec.DecodeError:
        return "log"
    return "progress" if event == "progress" else "log"


def status_fields(record: Job) -> EntryFields:
    """The stream entry announcing ``record``'s status."""
    event = StatusEvent(ts=timestamp(), job_id=record.id, status=record.status, error=record.error)
    return {_KIND: b"status", _DATA: _encoder.encode(event)}


def line_fields(line: bytes) -> EntryFields:
    """The stream entry carrying one ``logs.jsonl`` line (without its newline)."""
    data = line.rstrip(b"\n")
    return {_KIND: line_kind(data).encode(), _DATA: data}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: object) -> list[LiveEvent]:
    """Decode XRANGE-shaped entries: ``[(id, {field: value}), ...]``."""
    events: list[LiveEvent] = []
    if not isinstance(raw, list):
        return events
    for item in raw:
        if not isinstance(item, tuple | list) or len(item) != 2:
            continue
        entry_id, fields = item
        if not isinstance(fields, dict):
            continue
        kind = _text(fields.get(_KIND, b"log"))
        data = fields.get(_DATA, b"{}")
        if kind not in EVENT_KINDS or not isinstance(data, bytes):
            continue
        event_kind: EventKind = "status" if kind == "status" else "progress" if kind == "progress" else "log"
        events.append(LiveEvent(id=_text(entry_id), event=event_kind, data=msgspec.Raw(data)))
    return events


class JobEvents:
    """Reads and appends job event streams."""

    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def append(self, job_id: str, fields: EntryFields) -> str:
        """Append one entry; returns its id."""
        entry_id = await self._redis.xadd(stream_key(job_id), fields, maxlen=STREAM_MAXLEN, approximate=True)
        return _text(entry_id)

    async def last(self, job_id: str, count: int) -> list[LiveEvent]:
        """The newest ``count`` events, oldest first."""
        if count <= 0:
            return []
        raw = await self._redis.xrevrange(stream_key(job_id), "+", "-", count=count)
        return list(reversed(_entries(raw)))

    async def after(
        self, job_id: str, event_id: str, *, count: int = 500, block_ms: int | None = None
    ) -> list[LiveEvent]:
        """Events after ``event_id`` (exclusive), oldest first; waits up to ``block_ms`` for one when there
        are none (``None``: do not wait)."""
        if block_ms is None:
            raw = await self._redis.xrange(stream_key(job_id), f"({event_id}", "+", count=count)
            return _entries(raw)
        reply = await self._redis.xread({stream_key(job_id): event_id}, count=count, block=block_ms)
        if not isinstance(reply, list) or not reply:
            return []
        first = reply[0]
        return _entries(first[1]) if isinstance(first, tuple | list) and len(first) == 2 else []


class LivePublisher:
    """Publishes log lines from async worker code without blocking its event loop: ``publish`` queues the
    line, one task appends queued lines in order, ``flush`` waits until every queued line is in Redis.

    A Redis error drops the line from the live stream (``logs.jsonl`` still has it) and is logged.
    """

    def __init__(self, client: Redis) -> None:
        self._events = JobEvents(client)
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def publish(self, job_id: str, line: bytes) -> None:
        """Queue ``line`` (one ``logs.jsonl`` line) for job ``job_id``'s stream. Call from the event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        self._queue.put_nowait((job_id, line))

    async def flush(self) -> None:
        """Wait until every line queued so far is appended."""
        if self._task is not None and not self._task.done():
            await self._queue.join()

    async def aclose(self) -> None:
        """Flush, then stop the appending task."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _drain(self) -> None:
        while True:
            job_id, line = await self._queue.get()
            try:
                await self._events.append(job_id, line_fields(line))
            except (redis.RedisError, OSError) as exc:
                logger.warning(
                    "live log line not published",
                    extra={"event": "publish_failed", "job_id": job_id, "error": str(exc)},
                )
            finally:
                self._queue.task_done()
