"""The live-event hub against a real Redis: many followers of one job share one reader and each gets
every event exactly once, in order, whatever its timing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from mt_api import live
from mt_api.live import EventHub, follow
from mt_contracts import codec
from mt_contracts.events import LiveEvent, log_event
from mt_contracts.jobs import JobError, TokenizerJob
from mt_contracts.requests import TrainTokenizerRequest
from mt_storage.events import JobEvents, event_fields
from mt_storage.jobs import JobStore, tokenizer_jobs
from mt_storage.lifecycle import Lease, Lifecycle
from tests.helpers import wait_for

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
JOB_ID = "tok_01JDQ8ZQ0000000000000000AA"


async def _running_job(redis: Redis) -> tuple[JobStore[TokenizerJob], Lease[TokenizerJob]]:
    lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", 60)
    await lifecycle.create(
        TokenizerJob(id=JOB_ID, request=TrainTokenizerRequest(corpus_path="a.txt"), created_at=NOW, updated_at=NOW)
    )
    lease = await lifecycle.start(JOB_ID)
    assert lease is not None
    return lifecycle.store, lease


async def _follow(hub: EventHub, store: JobStore[TokenizerJob], after: str | None = None) -> list[LiveEvent]:
    async def record() -> TokenizerJob | None:
        return await store.get(JOB_ID)

    received: list[LiveEvent] = []
    async for event in follow(hub, JOB_ID, record, after=after, tail=0, keepalive_seconds=5):
        if event is not None:
            received.append(event)
    return received


async def _append_lines(events: JobEvents, count: int, burst: int) -> list[str]:
    ids = []
    for number in range(count):
        event = log_event(JOB_ID, "info", "step", f"step {number}", n=number)
        ids.append(await events.append(JOB_ID, event_fields("log", codec.encode(event))))
        if number % burst == burst - 1:
            await asyncio.sleep(0.005)
    return ids


async def _xread_clients(redis: Redis) -> int:
    return sum(1 for client in await redis.client_list() if client.get("cmd") == "xread")


async def _wait(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, bool, 5.0)


async def test_fifty_followers_share_one_reader_and_each_gets_every_event_once(redis: Redis) -> None:
    store, lease = await _running_job(redis)
    events = JobEvents(redis)
    hub = EventHub(events)
    followers = [asyncio.create_task(_follow(hub, store)) for _ in range(50)]
    await _wait(lambda: hub.followers(JOB_ID) == 50)
    await asyncio.sleep(0.05)
    assert (hub.feeds, await _xread_clients(redis)) == (1, 1)

    ids = await _append_lines(events, 300, burst=7)
    await lease.fail(JobError(code="empty_corpus", message="no text"))
    results = await asyncio.wait_for(asyncio.gather(*followers), 10)

    terminal = (await events.last(JOB_ID, 1))[0]
    for received in results:
        assert [event.id for event in received] == [*ids, terminal.id]
        assert received[-1].event == "status" and b'"failed"' in bytes(received[-1].data)
    assert (hub.feeds, hub.followers(JOB_ID)) == (0, 0)


async def test_a_follower_behind_the_buffer_reads_redis_and_misses_nothing(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "FEED_BUFFER", 10)
    store, lease = await _running_job(redis)
    events = JobEvents(redis)
    hub = EventHub(events)
    first = [*await _append_lines(events, 5, burst=5)]

    # A slow follower: it takes one event, then the feed moves 60 events on (six times its buffer).
    async def record() -> TokenizerJob | None:
        return await store.get(JOB_ID)

    slow = follow(hub, JOB_ID, record, after=first[0], tail=0, keepalive_seconds=5)
    taken = await anext(slow)
    assert taken is not None and taken.id == first[1]
    later = await _append_lines(events, 60, burst=60)
    await _wait(lambda: hub.feeds == 1 and hub._feeds[JOB_ID].after(later[-1]) == [])
    assert hub._feeds[JOB_ID].after(first[1]) is None  # the buffer no longer reaches back to its cursor

    # A resume from the oldest event, while the slow follower still holds the feed.
    resumed = asyncio.create_task(_follow(hub, store, after=first[0]))
    await _wait(lambda: hub.followers(JOB_ID) == 2)
    await lease.fail(JobError(code="empty_corpus", message="no text"))
    rest = [event async for event in slow if event is not None]
    terminal = (await events.last(JOB_ID, 1))[0]
    assert [event.id for event in rest] == [*first[2:], *later, terminal.id]
    assert [event.id for event in await resumed] == [*first[1:], *later, terminal.id]
    assert hub.feeds == 0
