"""Following a job's live events (``mt_storage.events``): a backlog, then new events as they come, until
the job's terminal status. Plain async generators; the SSE and WebSocket routes only encode them.

``EventHub`` keeps one reader per followed job: a single blocking ``XREAD`` loop appends the job's new
events to a bounded in-memory buffer and wakes every follower, so 500 clients of one job cost one Redis
connection and one read per batch, not 500. Each follower keeps its own cursor (the last id it sent) and
takes from the buffer what is after it; a follower whose cursor is older than the buffer (a resume from an
old id, or a client slower than the buffer is long) reads from Redis itself until it catches up. Cursors
make delivery exact: no duplicate, no gap, whatever the timing of a follower's start.

Followers are woken ``WAKE_BATCH`` at a time, with a pass of the event loop between batches: 500 streams
sending at once would otherwise hold the loop for tens of milliseconds, and every other request (a
``/healthz`` probe) would wait behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import redis

from mt_contracts.events import LiveEvent, next_event_id, status_event
from mt_contracts.jobs import TERMINAL_STATUSES, Job
from mt_storage.events import JobEvents

logger = logging.getLogger(__name__)

KEEPALIVE = None  # what ``follow`` yields after ``keepalive_seconds`` without an event
# Events a job's feed keeps in memory for its followers.
FEED_BUFFER = 1_000
# How long one blocking XREAD of a feed waits before it is issued again (milliseconds).
FEED_BLOCK_MS = 10_000
# After a Redis error a feed waits this long (seconds) before reading again.
FEED_RETRY_SECONDS = 1.0
# Followers woken per pass of the event loop when new events arrive.
WAKE_BATCH = 32
_encoder = msgspec.json.Encoder()


class _Status(msgspec.Struct):
    status: str = ""


_status_decoder = msgspec.json.Decoder(_Status)


def is_terminal(event: LiveEvent) -> bool:
    """True for the status event that ends a job's stream."""
    return event.event == "status" and _status_decoder.decode(event.data).status in TERMINAL_STATUSES


def _order(event_id: str) -> tuple[int, int]:
    """A stream entry id (``<milliseconds>-<sequence>``) as a sortable pair."""
    millis, _, sequence = event_id.partition("-")
    return int(millis), int(sequence or 0)


class Feed:
    """One job's new events, read once from Redis for all its followers.

    The buffer holds every event after ``base`` (oldest first, at most ``FEED_BUFFER``); followers waiting
    for more (``wait``) are woken in batches when events are added.
    """

    def __init__(self, events: JobEvents, job_id: str) -> None:
        self.job_id = job_id
        self.followers = 0
        self._waiters: dict[asyncio.Future[None], None] = {}  # insertion-ordered: woken first come, first served
        self._to_wake: list[asyncio.Future[None]] = []
        self._waking: asyncio.Task[None] | None = None
        self._events = events
        self._buffer: deque[LiveEvent] = deque()
        self._base = (0, 0)
        self._cursor = "0-0"
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"feed:{self.job_id}")

    async def ready(self) -> None:
        """Wait until the feed knows where the stream ends (its first read position)."""
        await self._ready.wait()

    async def stop(self) -> None:
        for task in (self._task, self._waking):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for new events; False when none came. Call right after ``after`` returned
        nothing, with no ``await`` in between, so that no batch can arrive unseen."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(waiter, None)
        return True

    def after(self, cursor: str) -> list[LiveEvent] | None:
        """The buffered events after ``cursor``, oldest first; ``None`` when events between ``cursor`` and
        the buffer's start are not buffered (read them from Redis)."""
        position = _order(cursor)
        if position < self._base:
            return None
        newer: list[LiveEvent] = []
        for event in reversed(self._buffer):
            if _order(event.id) <= position:
                break
            newer.append(event)
        newer.reverse()
        return newer

    async def _run(self) -> None:
        while not self._ready.is_set():
            try:
                newest = await self._events.last(self.job_id, 1)
            except (redis.RedisError, OSError) as exc:
                self._log_error(exc)
                await asyncio.sleep(FEED_RETRY_SECONDS)
                continue
            self._cursor = newest[-1].id if newest else "0-0"
            self._base = _order(self._cursor)
            self._ready.set()
        while True:
            try:
                batch = await self._events.after(self.job_id, self._cursor, block_ms=FEED_BLOCK_MS)
            except (redis.RedisError, OSError) as exc:
                self._log_error(exc)
                await asyncio.sleep(FEED_RETRY_SECONDS)
                continue
            if batch:
                self._add(batch)

    def _add(self, batch: list[LiveEvent]) -> None:
        self._buffer.extend(batch)
        while len(self._buffer) > FEED_BUFFER:
            self._base = _order(self._buffer.popleft().id)
        self._cursor = batch[-1].id
        # Those waiting now are woken; a follower that starts waiting later checked the buffer after this
        # batch was added, so it has nothing to be woken for.
        self._to_wake.extend(self._waiters)
        self._waiters.clear()
        if self._to_wake and (self._waking is None or self._waking.done()):
            self._waking = asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        """Wake the followers in ``_to_wake``, ``WAKE_BATCH`` per pass of the event loop."""
        while self._to_wake:
            for waiter in self._to_wake[:WAKE_BATCH]:
                if not waiter.done():
                    waiter.set_result(None)
            del self._to_wake[:WAKE_BATCH]
            await asyncio.sleep(0)

    def _log_error(self, exc: BaseException) -> None:
        logger.warning(
            "live feed cannot read its stream", extra={"event": "feed_error", "job_id": self.job_id, "error": str(exc)}
        )


class EventHub:
    """The feeds of the jobs being followed, shared by all their followers; a feed stops with its last
    follower."""

    def __init__(self, events: JobEvents) -> None:
        self.events = events
        self._feeds: dict[str, Feed] = {}

    @property
    def feeds(self) -> int:
        """How many jobs are being followed (one Redis reader each)."""
        return len(self._feeds)

    def followers(self, job_id: str) -> int:
        """How many streams follow job ``job_id``."""
        feed = self._feeds.get(job_id)
        return feed.followers if feed is not None else 0

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Feed]:
        """Job ``job_id``'s feed, started for the first follower and stopped after the last."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = Feed(self.events, job_id)
            feed.start()
        feed.followers += 1
        try:
            await feed.ready()
            yield feed
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                await feed.stop()

    async def close(self) -> None:
        """Stop every feed (at shutdown)."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()


async def follow(
    hub: EventHub,
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
    events = hub.events
    # Subscribed before the backlog is read: every event after the backlog then reaches the feed.
    async with hub.subscribe(job_id) as feed:
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
        job = await record()
        ended = job is None or job.status in TERMINAL_STATUSES
        while True:
            if ended:
                batch = await events.after(job_id, cursor)
            else:
                buffered = feed.after(cursor)
                batch = buffered if buffered is not None else await events.after(job_id, cursor)
            for event in batch:
                yield event
                cursor = event.id
                if is_terminal(event):
                    return
            if batch:
                continue
            if ended:
                if job is not None:
                    status = status_event(job_id, job.status, job.error)
                    yield LiveEvent(id=next_event_id(cursor), event="status", data=msgspec.Raw(_encoder.encode(status)))
                return
            # Nothing after the cursor now: wait for the feed's next batch.
            if not await feed.wait(keepalive_seconds):
                yield KEEPALIVE
                job = await record()
                ended = job is None or job.status in TERMINAL_STATUSES


async def has_events_after(events: JobEvents, job_id: str, after: str) -> bool:
    """True when the stream holds an event after ``after``."""
    return bool(await events.after(job_id, after, count=1))
