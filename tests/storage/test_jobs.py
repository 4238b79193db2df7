"""Job records and their lifecycle against a real Redis: guarded transitions, one owner at a time, fencing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from redis.asyncio import Redis

from mt_contracts.jobs import TERMINAL_STATUSES, JobError, JobStatus, RunJob, TokenizerJob
from mt_contracts.lifecycle import JOB_KINDS, TABLES, TRANSITIONS, JobKind, Transition, next_status
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_storage import RecordNotFound, StorageError
from mt_storage.events import JobEvents, stream_key
from mt_storage.jobs import FINISHED_STREAM_TTL_SECONDS, JobStore, run_jobs, tokenizer_jobs
from mt_storage.lifecycle import LeaseLost, Lifecycle, shown

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
JOB_ID = "tok_01JDQ8ZQ0000000000000000AA"
STALL = 10.0


def _job(job_id: str = JOB_ID) -> TokenizerJob:
    return TokenizerJob(id=job_id, request=TrainTokenizerRequest(corpus_path="a.txt"), created_at=NOW, updated_at=NOW)


def _lifecycle(redis: Redis) -> Lifecycle[TokenizerJob]:
    return Lifecycle(tokenizer_jobs(redis), "tokenizer", STALL)


async def _silence(store: JobStore[TokenizerJob], job_id: str, seconds: float) -> None:
    """Make the job's lease ``seconds`` old, as if its worker stopped renewing it (test set-up only)."""
    old = datetime.now(UTC) - timedelta(seconds=seconds)

    def age(record: TokenizerJob) -> TokenizerJob:
        return msgspec.structs.replace(record, heartbeat_at=old, started_at=old)

    await store.transact(job_id, age)


@pytest.mark.parametrize("kind", JOB_KINDS)
@pytest.mark.parametrize("transition", TRANSITIONS)
@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_are_left_only_by_resuming_an_ended_run(
    kind: JobKind, transition: Transition, terminal: JobStatus
) -> None:
    after = next_status(kind, transition, terminal)
    if kind == "run" and transition == "resume" and terminal in {"failed", "cancelled"}:
        assert after == "queued"
    else:
        assert after is None, f"{kind} {terminal} --{transition}--> {after}"


def test_every_kind_has_every_transition_and_stalled_is_never_a_state() -> None:
    for kind in JOB_KINDS:
        assert set(TABLES[kind]) == set(TRANSITIONS)
        for moves in TABLES[kind].values():
            assert "stalled" not in moves and "stalled" not in moves.values()


async def test_create_get_roundtrip_and_duplicate_refused(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    await lifecycle.create(_job())
    assert await lifecycle.store.get(JOB_ID) == _job()
    with pytest.raises(StorageError, match="already exists"):
        await lifecycle.create(_job())


async def test_a_finished_job_never_moves_backwards(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    await lifecycle.create(_job())
    lease = await lifecycle.start(JOB_ID)
    assert lease is not None
    failed = await lease.fail(JobError(code="empty_corpus", message="no text"))
    assert failed.status == "failed"
    assert await lifecycle.start(JOB_ID) is None
    with pytest.raises(LeaseLost):
        await lease.succeed(lambda r: r)
    # A tokenizer is never resumed: only runs continue from a checkpoint.
    assert await lifecycle.resume(JOB_ID, lambda r: r) is None
    stored = await lifecycle.store.get(JOB_ID)
    assert stored is not None
    assert (stored.status, stored.error, stored.attempts) == ("failed", JobError("empty_corpus", "no text"), 1)


async def test_concurrent_starts_give_one_lease(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    await lifecycle.create(_job())
    leases = await asyncio.gather(*(lifecycle.start(JOB_ID) for _ in range(20)))
    owners = [lease for lease in leases if lease is not None]
    assert len(owners) == 1
    stored = await lifecycle.store.get(JOB_ID)
    assert stored is not None and (stored.attempts, stored.owner) == (1, owners[0].token)


async def test_a_stale_owner_can_no_longer_write_and_a_fresh_lease_is_never_taken(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    await lifecycle.create(_job())
    first = await lifecycle.start(JOB_ID)
    assert first is not None
    # Fresh: neither another start nor a reaper takes it.
    assert await lifecycle.start(JOB_ID) is None
    assert await lifecycle.reap(JOB_ID, "requeue") is None
    await first.heartbeat()

    await _silence(lifecycle.store, JOB_ID, STALL + 5)
    requeued = await lifecycle.reap(JOB_ID, "requeue")
    assert requeued is not None and (requeued.status, requeued.owner) == ("queued", None)
    second = await lifecycle.start(JOB_ID)
    assert second is not None and second.token != first.token and second.job.attempts == 2

    for write in (first.heartbeat, lambda: first.progress(lambda r: r), lambda: first.succeed(lambda r: r)):
        with pytest.raises(LeaseLost, match="owned by 2:"):
            await write()
    done = await second.succeed(lambda r: r)
    assert (done.status, done.owner, done.attempts) == ("succeeded", second.token, 2)


async def test_a_stalled_job_is_shown_stalled_but_stored_running(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    await lifecycle.create(_job())
    await lifecycle.start(JOB_ID)
    await _silence(lifecycle.store, JOB_ID, STALL + 1)
    stored = await lifecycle.store.get(JOB_ID)
    assert stored is not None and stored.status == "running"
    assert shown(stored, datetime.now(UTC), STALL).status == "stalled"
    assert shown(stored, datetime.now(UTC), STALL + 5).status == "running"


async def test_cancel_of_a_running_job_waits_for_its_owner(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    await lifecycle.create(_job())
    lease = await lifecycle.start(JOB_ID)
    assert lease is not None
    cancelling = await lifecycle.cancel(JOB_ID)
    assert cancelling is not None and cancelling.status == "cancelling"
    assert (await lease.heartbeat()).status == "cancelling"
    assert (await lease.finish_cancel()).status == "cancelled"
    assert await lifecycle.cancel(JOB_ID) is None


async def test_a_missing_record_raises(redis: Redis) -> None:
    with pytest.raises(RecordNotFound):
        await _lifecycle(redis).start("tok_01JDQ8ZQ0000000000000000ZZ")


async def test_list_pages_newest_first_with_a_status_filter(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    store = lifecycle.store
    ids = [f"tok_01JDQ8ZQ00000000000000{index:04d}" for index in range(7)]
    for job_id in ids:
        await lifecycle.create(_job(job_id))
    for job_id in ids[1::2]:
        await lifecycle.fail_queued(job_id, JobError(code="empty_corpus", message="no text"))

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

    # A bounded scan examines only the newest max_scanned ids: a short page and where to go on from.
    failed, cursor = await store.list_page(limit=5, status="failed", max_scanned=4)
    assert ([r.id for r in failed], cursor) == ([ids[5], ids[3]], ids[3])
    failed, cursor = await store.list_page(limit=5, status="failed", cursor=cursor, max_scanned=4)
    assert ([r.id for r in failed], cursor) == ([ids[1]], None)


async def test_list_drops_expired_records_from_the_index(redis: Redis) -> None:
    lifecycle = _lifecycle(redis)
    for job_id in ("tok_01JDQ8ZQ0000000000000000AA", "tok_01JDQ8ZQ0000000000000000AB"):
        await lifecycle.create(_job(job_id))
    await redis.delete(lifecycle.store.key("tok_01JDQ8ZQ0000000000000000AB"))
    page, cursor = await lifecycle.store.list_page(limit=5)
    assert ([r.id for r in page], cursor) == (["tok_01JDQ8ZQ0000000000000000AA"], None)
    assert await redis.zrange(lifecycle.store.index_key, 0, -1) == [b"tok_01JDQ8ZQ0000000000000000AA"]


async def test_a_finished_runs_event_stream_expires_and_a_resume_keeps_it_again(redis: Redis) -> None:
    lifecycle = Lifecycle(run_jobs(redis), "run", STALL)
    run_id = "run_01JDQ8ZQ0000000000000000AA"
    request = TrainRunRequest(tokenizer_id="tok_01JDQ8ZQ0000000000000000AA", corpus_path="a.txt")
    await lifecycle.create(RunJob(id=run_id, request=request, created_at=NOW, updated_at=NOW))
    stream = stream_key(run_id)
    lease = await lifecycle.start(run_id)
    assert lease is not None
    assert await redis.ttl(stream) == -1  # no expiry while the job lives
    await lease.fail(JobError(code="diverged", message="lower learning_rate"))
    assert FINISHED_STREAM_TTL_SECONDS - 5 <= await redis.ttl(stream) <= FINISHED_STREAM_TTL_SECONDS
    resumed = await lifecycle.resume(run_id, lambda r: r)
    assert resumed is not None and (resumed.status, resumed.attempts, resumed.error) == ("queued", 0, None)
    assert await redis.ttl(stream) == -1
    assert [event.event for event in await JobEvents(redis).last(run_id, 10)] == ["status"] * 4


async def test_a_run_stored_before_model_options_is_read_in_todays_shape(redis: Redis) -> None:
    request = TrainRunRequest(tokenizer_id=JOB_ID, corpus_path="a.txt", model="llama", model_options={"n_kv_head": 2})
    run = RunJob(id="run_01JDQ8ZQ0000000000000000AA", request=request, created_at=NOW, updated_at=NOW)
    record = msgspec.to_builtins(run)
    assert isinstance(record, dict)
    flat = {key: value for key, value in record["request"].items() if key != "model_options"}
    # As the run store wrote it then: the llama options at the top of the request, null when not sent.
    old = {**record, "request": {**flat, "n_kv_head": 2, "intermediate_size": None}}
    store = run_jobs(redis)
    await redis.set(store.key(run.id), msgspec.json.encode(old))
    assert await store.get(run.id) == run
