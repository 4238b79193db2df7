"""Live job events in Redis: one capped Redis Stream per job, so the API and the workers need not share a
disk to stream logs.

An entry holds an event's ``kind`` (from its type: never sniffed back from the JSON) and ``data``, the
``mt_contracts.events.JobEvent`` as the worker wrote it to ``logs.jsonl``. The workers publish with
``LivePublisher``; ``JobStore`` adds a ``status`` event in the same transaction as every status change.
Entry ids are Redis's own, monotonic per stream, and serve as the events' ids for resuming.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import msgspec
import redis
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from mt_contracts import codec
from mt_contracts.events import EventKind, JobEvent, LiveEvent, kind_of, status_event
from mt_contracts.jobs import Job

logger = logging.getLogger(__name__)

EVENTS_PREFIX = "mt:events:"
# Entries kept per job (approximately: Redis trims whole nodes). A resume older than this starts at the
# oldest entry kept; logs.jsonl keeps every event.
STREAM_MAXLEN = 10_000
# Events a publisher holds while Redis is unreachable; beyond this the oldest are dropped from the live
# stream (``logs.jsonl`` keeps them).
PUBLISH_BACKLOG = 10_000
# Waits between publish attempts while Redis is unreachable (seconds): doubling from the first to the last.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
# How long closing a publisher waits for its queued events to reach Redis (seconds).
CLOSE_FLUSH_SECONDS = 5.0
# A stream entry's fields: ``kind`` and ``data`` (the JSON event).
EntryFields = dict[FieldT, EncodableT]
_KIND = b"kind"
_DATA = b"data"
# The errors a background loop waits out rather than dies of: Redis unreachable for now (a restart, a network
# cut), and the refusals of a Redis that cannot write for now (OOM at maxmemory, MISCONF on a full disk,
# READONLY after a failover, LOADING at start-up).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


async def wait_idle(idle: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Wait until ``idle`` is set or ``task`` (the loop that sets it) ended, whichever comes first."""
    waiter = asyncio.ensure_future(idle.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def stream_key(job_id: str) -> str:
    """The Redis key of job ``job_id``'s event stream."""
    return f"{EVENTS_PREFIX}{job_id}"


def status_fields(record: Job) -> EntryFields:
    """The stream entry announcing ``record``'s status."""
    return event_fields("status", codec.encode(status_event(record.id, record.status, record.error)))


def event_fields(kind: EventKind, data: bytes) -> EntryFields:
    """The stream entry of one encoded event of ``kind``."""
    return {_KIND: kind.encode(), _DATA: data}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _kind(value: str) -> EventKind | None:
    match value:
        case "log" | "progress" | "validation" | "checkpoint" | "status":
            return value
    return None


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
        kind = _kind(_text(fields.get(_KIND, b"")))
        data = fields.get(_DATA)
        if kind is None or not isinstance(data, bytes):
            continue
        events.append(LiveEvent(id=_text(entry_id), event=kind, data=msgspec.Raw(data)))
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
    """Publishes events from async worker code without blocking its event loop: ``publish`` queues the
    event, one task appends queued events in order, ``flush`` waits until every queued event is in Redis.

    While Redis is unreachable the task keeps the events and tries again with a doubling wait (at most
    ``RETRY_MAX_SECONDS``), so the live stream has them once Redis is back; past ``PUBLISH_BACKLOG`` queued
    events the oldest are dropped from the stream (``logs.jsonl`` keeps them), with a warning.
    """

    def __init__(self, client: Redis) -> None:
        self._events = JobEvents(client)
        self._queue: deque[tuple[str, EventKind, bytes]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def publish(self, event: JobEvent, data: bytes | None = None) -> None:
        """Queue ``event`` (``data``: its JSON when already encoded) for its job's stream. Call from the
        event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        if len(self._queue) >= PUBLISH_BACKLOG:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("live events dropped", extra={"event": "publish_dropped", "dropped": self.dropped})
        self._queue.append((event.job_id, kind_of(event), codec.encode(event) if data is None else data))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every event queued so far is appended (while Redis is down: until it is back)."""
        if self._task is not None and not self._task.done():
            await wait_idle(self._idle, self._task)

    async def aclose(self) -> None:
        """Flush for at most ``CLOSE_FLUSH_SECONDS``, then stop the appending task."""
        try:
            async with asyncio.timeout(CLOSE_FLUSH_SECONDS):
                await self.flush()
        except TimeoutError:
            logger.warning(
                "live events not published at shutdown", extra={"event": "publish_abandoned", "left": len(self._queue)}
            )
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _drain(self) -> None:
        wait = RETRY_FIRST_SECONDS
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            job_id, kind, data = self._queue[0]
            try:
                await self._events.append(job_id, event_fields(kind, data))
            except REDIS_DOWN as exc:
                if wait == RETRY_FIRST_SECONDS:
                    logger.warning(
                        "live events waiting for redis",
                        extra={"event": "publish_waiting", "job_id": job_id, "error": str(exc)},
                    )
                await asyncio.sleep(wait)
                wait = min(RETRY_MAX_SECONDS, wait * 2)
                continue
            wait = RETRY_FIRST_SECONDS
            if self._queue and self._queue[0][2] is data:
                self._queue.popleft()
