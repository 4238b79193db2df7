from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest
from redis.asyncio import Redis

from mt_contracts.jobs import JobError, TokenizerJob
from mt_contracts.requests import TrainTokenizerRequest
from mt_storage import RecordNotFound, StorageError
from mt_storage.events import JobEvents, stream_key
from mt_storage.jobs import FINISHED_STREAM_TTL_SECONDS, tokenizer_jobs

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _job(job_id: str = "tok_01JDQ8ZQ0000000000000000AA") -> TokenizerJob:
    return TokenizerJob(
        id=job_id, status="queued", request=TrainTokenizerRequest(corpus_path="a.txt"), created_at=NOW, updated_at=NOW
    )


async def test_create_get_roundtrip_and_duplicate_refused(redis: Redis) -> None:
    store = tokenizer_jobs(redis)
    await store.create(_job())
    assert await store.get(_job().id) == _job()
    with pytest.raises(StorageError, match="already exists"):
        await store.create(_job())


async def test_a_finished_job_never_moves_backwards(redis: Redis) -> None:
    store = tokenizer_jobs(redis)
    await store.create(_job())
    assert (await store.mark_running(_job().id)) is not None
    failed = await store.mark_failed(_job().id, JobError(code="empty_corpus", message="no text"))
    assert failed is not None and failed.status == "failed"
    assert await store.mark_running(_job().id) is None
    late = await store.update(_job().id, lambda r: msgspec.structs.replace(r, status="succeeded"))
    assert late is None
    stored = await store.get(_job().id)
    assert stored is not None
    assert (stored.status, stored.error, stored.attempts) == ("failed", JobError("empty_corpus", "no text"), 1)


async def test_concurrent_updates_are_all_applied(redis: Redis) -> None:
    store = tokenizer_jobs(redis)
    await store.create(_job())
    await asyncio.gather(*(store.mark_running(_job().id) for _ in range(20)))
    stored = await store.get(_job().id)
    assert stored is not None and stored.attempts == 20


async def test_update_of_a_missing_record_raises(redis: Redis) -> None:
    with pytest.raises(RecordNotFound):
        await tokenizer_jobs(redis).mark_running("tok_01JDQ8ZQ0000000000000000ZZ")


async def test_list_pages_newest_first_with_a_status_filter(redis: Redis) -> None:
    store = tokenizer_jobs(redis)
    ids = [f"tok_01JDQ8ZQ00000000000000{index:04d}" for index in range(7)]
    for job_id in ids:
        await store.create(_job(job_id))
    for job_id in ids[1::2]:
        await store.mark_failed(job_id, JobError(code="empty_corpus", message="no text"))

    first, cursor = await store.list_page(limit=3)
    assert ([r.id for r in first], cursor) == (ids[:3:-1][:3], ids[4])
    second, cursor = await store.list_page(limit=3, cursor=cursor)
    assert ([r.id for r in second], cursor) == ([ids[3], ids[2], ids[1]], ids[1])
    last, cursor = await store.list_page(limit=3, cursor=cursor)
    assert ([r.id for r in last], cursor) == ([ids[0]], None)

    failed, cursor = await store.list_page(limit=2, status="failed")
    assert ([r.id for r in failed], cursor) == ([ids[5], ids[3]], ids[3])
    failed, cursor = await store.list_page(limit=2, status="failed", cursor=cursor)
    assert ([r.id for r in failed], cursor) == ([ids[1]], None)


async def test_list_drops_expired_records_from_the_index(redis: Redis) -> None:
    store = tokenizer_jobs(redis)
    for job_id in ("tok_01JDQ8ZQ0000000000000000AA", "tok_01JDQ8ZQ0000000000000000AB"):
        await store.create(_job(job_id))
    await redis.delete(store.key("tok_01JDQ8ZQ0000000000000000AB"))
    page, cursor = await store.list_page(limit=5)
    assert ([r.id for r in page], cursor) == (["tok_01JDQ8ZQ0000000000000000AA"], None)
    assert await redis.zrange(store.index_key, 0, -1) == [b"tok_01JDQ8ZQ0000000000000000AA"]


async def test_a_finished_jobs_event_stream_expires_and_a_resume_keeps_it_again(redis: Redis) -> None:
    store = tokenizer_jobs(redis)
    await store.create(_job())
    stream = stream_key(_job().id)
    await store.mark_running(_job().id)
    assert await redis.ttl(stream) == -1  # no expiry while the job lives
    await store.mark_failed(_job().id, JobError(code="empty_corpus", message="no text"))
    assert FINISHED_STREAM_TTL_SECONDS - 5 <= await redis.ttl(stream) <= FINISHED_STREAM_TTL_SECONDS
    # failed -> queued is a resume (runs only in practice; the store allows it for any kind).
    await store.update(_job().id, lambda r: msgspec.structs.replace(r, status="queued"))
    assert await redis.ttl(stream) == -1
    assert [event.event for event in await JobEvents(redis).last(_job().id, 10)] == ["status"] * 4
