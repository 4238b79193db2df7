"""The reaper against a real Redis and arq queue: stalled jobs are requeued, failed or cancelled."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from redis.asyncio import Redis

from mt_contracts import codec
from mt_contracts.jobs import CheckpointInfo, RunJob, TokenizerJob
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.settings import WorkerServiceSettings
from mt_storage.embedded_redis import EmbeddedRedis
from mt_storage.files import atomic_write_bytes
from mt_storage.jobs import run_jobs, tokenizer_jobs
from mt_storage.layout import Layout
from mt_storage.lifecycle import Lifecycle
from mt_storage.queue import ArqJobQueue
from mt_storage.reaper import Reaper, attempts_left
from mt_trainer_worker.reaper import run_reaper

QUEUE = "mt:queue:test-reaper"
TASK = "train_tokenizer"
IDS = [f"tok_01JDQ8ZQ00000000000000000{letter}" for letter in "ABC"]


@pytest.fixture
async def queue(redis: Redis, redis_server: EmbeddedRedis) -> AsyncIterator[ArqJobQueue]:
    queue = await ArqJobQueue.connect(redis_server.url)
    yield queue
    await queue.close()


async def _silence(lifecycle: Lifecycle[TokenizerJob], job_id: str, silent_seconds: float) -> None:
    beat = datetime.now(UTC) - timedelta(seconds=silent_seconds)
    await lifecycle.store.transact(job_id, lambda r: msgspec.structs.replace(r, heartbeat_at=beat))


async def _running(lifecycle: Lifecycle[TokenizerJob], queue: ArqJobQueue, job_id: str, silent_seconds: float) -> None:
    now = datetime.now(UTC)
    request = TrainTokenizerRequest(corpus_path="a.txt")
    await lifecycle.create(TokenizerJob(id=job_id, request=request, created_at=now, updated_at=now))
    await queue.enqueue(TASK, job_id, QUEUE)
    assert await lifecycle.start(job_id) is not None
    await _silence(lifecycle, job_id, silent_seconds)


def _reaper(lifecycle: Lifecycle[TokenizerJob], queue: ArqJobQueue, max_tries: int) -> Reaper[TokenizerJob]:
    return Reaper(
        lifecycle,
        queue,
        QUEUE,
        task=TASK,
        cannot_retry=attempts_left(max_tries),
        advice=lambda job_id: "submit it again",
    )


async def test_stalled_jobs_are_requeued_while_they_have_attempts_then_failed(redis: Redis, queue: ArqJobQueue) -> None:
    lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", 10)
    store = lifecycle.store
    await _running(lifecycle, queue, IDS[0], silent_seconds=30)
    await _running(lifecycle, queue, IDS[1], silent_seconds=2)  # alive: left alone
    await _running(lifecycle, queue, IDS[2], silent_seconds=30)
    await lifecycle.cancel(IDS[2])

    assert await _reaper(lifecycle, queue, max_tries=2).reap_once() == {IDS[0]: "requeued", IDS[2]: "cancelled"}
    requeued, alive, cancelled = [await store.get(job_id) for job_id in IDS]
    assert requeued is not None and (requeued.status, requeued.attempts) == ("queued", 1)
    assert alive is not None and alive.status == "running"
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await redis.zscore(QUEUE, IDS[0]) is not None  # still on the queue, for any worker
    assert await redis.zscore(QUEUE, IDS[2]) is None  # taken off it

    # The second attempt stalls too, and the job has used its attempts.
    assert await lifecycle.start(IDS[0]) is not None
    await _silence(lifecycle, IDS[0], 60)
    assert await _reaper(lifecycle, queue, max_tries=2).reap_once() == {IDS[0]: "failed"}
    failed = await store.get(IDS[0])
    assert failed is not None and failed.status == "failed" and failed.error is not None
    assert failed.error.code == "worker_lost"
    assert "tokenizer's worker stopped answering 60 s ago and it used its 2 attempts; submit it again" in (
        failed.error.message
    )
    assert await redis.zscore(QUEUE, IDS[0]) is None


def _silent_for(seconds: float) -> Callable[[RunJob], RunJob]:
    beat = datetime.now(UTC) - timedelta(seconds=seconds)
    return lambda record: msgspec.structs.replace(record, heartbeat_at=beat)


async def test_a_stalled_run_is_resumed_only_from_a_checkpoint(
    redis: Redis, queue: ArqJobQueue, worker_settings: WorkerServiceSettings
) -> None:
    lifecycle = Lifecycle(run_jobs(redis), "run", 10)
    layout = Layout.from_settings(worker_settings.app)
    reaper = run_reaper(lifecycle, queue, layout, worker_settings)
    now = datetime.now(UTC)
    request = TrainRunRequest(tokenizer_id="tok_01JDQ8ZQ0000000000000000AA", corpus_path="a.txt")
    with_checkpoint, without = "run_01JDQ8ZQ0000000000000000AA", "run_01JDQ8ZQ0000000000000000AB"
    for run_id in (with_checkpoint, without):
        await lifecycle.create(RunJob(id=run_id, request=request, created_at=now, updated_at=now))
        await queue.enqueue("train_model", run_id, worker_settings.queue.training)
        assert await lifecycle.start(run_id) is not None
        await lifecycle.store.transact(run_id, _silent_for(30))
    info = CheckpointInfo(step=20, path="checkpoints/step-000000020.pt", size_bytes=1, created_at=now)
    atomic_write_bytes(layout.run_dir(with_checkpoint) / "checkpoints.json", codec.encode([info]))

    assert await reaper.reap_once() == {with_checkpoint: "requeued", without: "failed"}
    requeued, failed = [await lifecycle.store.get(run_id) for run_id in (with_checkpoint, without)]
    assert requeued is not None and (requeued.status, requeued.owner) == ("queued", None)
    assert failed is not None and failed.status == "failed" and failed.error is not None
    assert failed.error.code == "worker_lost"
    assert "and it has no checkpoint; POST /runs/run_01JDQ8ZQ0000000000000000AB/resume" in failed.error.message


async def test_a_queued_job_that_arq_no_longer_holds_is_enqueued_again(redis: Redis, queue: ArqJobQueue) -> None:
    # A stale owner that finished its arq job after the reaper had requeued the record leaves the record
    # queued with no arq job: the next pass puts it back, once it has waited a stall period.
    lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", 10)
    old = datetime.now(UTC) - timedelta(seconds=30)
    orphan, fresh, held = IDS
    for job_id in IDS:
        created = old if job_id != fresh else datetime.now(UTC)
        request = TrainTokenizerRequest(corpus_path="a.txt")
        await lifecycle.create(TokenizerJob(id=job_id, request=request, created_at=created, updated_at=created))
    await queue.enqueue(TASK, held, QUEUE)
    await redis.set(f"arq:result:{orphan}", b"done")  # arq refuses an id whose result it keeps

    assert await _reaper(lifecycle, queue, max_tries=2).reap_once() == {orphan: "enqueued"}
    assert await redis.zscore(QUEUE, orphan) is not None and await queue.exists(orphan)
    assert await redis.zscore(QUEUE, fresh) is None  # just created: the API enqueues it itself
    assert await _reaper(lifecycle, queue, max_tries=2).reap_once() == {}
