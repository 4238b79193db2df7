"""Job records in Redis, one JSON value per job, with guarded status writes.

Every update is an optimistic transaction (WATCH / MULTI / EXEC): read the record, apply a change, refuse
the write when the status transition is not allowed (``mt_contracts.jobs.transition_allowed``), retry when
another writer got there first. A late or retried writer therefore never moves a finished job backwards.

Each kind also keeps an index, a sorted set ``<prefix>index`` of its ids with score 0, written by
``create``: ids are ULIDs, so their lexical order is creation order and ``list_page`` reads it newest first.
Creating a record and every status change also append a ``status`` event to the job's live event stream
(``mt_storage.events``) in the same transaction. A job's stream expires ``FINISHED_STREAM_TTL_SECONDS``
after the job ends (a later resume keeps it again); ``logs.jsonl`` keeps every line for good, and a stream
request for a job whose stream expired ends at once with the record's status.
A record created in a ``group`` (the evaluations of one run) is also indexed in ``<prefix>group:<group>``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from mt_contracts import codec
from mt_contracts.jobs import (
    TERMINAL_STATUSES,
    EvalJob,
    Job,
    JobError,
    JobStatus,
    RunJob,
    TokenizerJob,
    transition_allowed,
)
from mt_storage import RecordNotFound, StorageError
from mt_storage.events import STREAM_MAXLEN, status_fields, stream_key

ACTIVE_STATUSES = frozenset({"running", "cancelling"})
# How long a finished job's live event stream stays in Redis (late readers and resumes): 7 days.
FINISHED_STREAM_TTL_SECONDS = 7 * 24 * 3600

R = TypeVar("R", bound=Job)


def is_stalled(job: Job, now: datetime, stall_after_seconds: float) -> bool:
    """True when ``job`` is ``running`` or ``cancelling`` but the process doing it has not sent a heartbeat
    for more than ``stall_after_seconds`` (its worker or process is gone, or hangs)."""
    if job.status not in ACTIVE_STATUSES:
        return False
    last = job.heartbeat_at or job.started_at or job.updated_at
    return now - last > timedelta(seconds=stall_after_seconds)


def shown(job: R, now: datetime, stall_after_seconds: float) -> R:
    """``job`` as clients see it: ``stalled`` when ``is_stalled`` (never stored)."""
    return msgspec.structs.replace(job, status="stalled") if is_stalled(job, now, stall_after_seconds) else job


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class JobStore(Generic[R]):
    """Records of one kind (``record_type``) under ``<prefix><id>`` keys.

    ``<prefix>active`` is the set of ids whose status is ``running`` or ``cancelling``, kept in the same
    transaction as each write, so a reaper can find jobs whose worker died. ``retention_seconds`` bounds
    how long a record lives after its last write (``None`` keeps it forever).
    """

    def __init__(self, redis: Redis, record_type: type[R], prefix: str, retention_seconds: int | None = None) -> None:
        self._redis = redis
        self._type = record_type
        self._prefix = prefix
        self._retention = retention_seconds

    def key(self, job_id: str) -> str:
        return f"{self._prefix}{job_id}"

    @property
    def active_key(self) -> str:
        return f"{self._prefix}active"

    async def active_ids(self) -> list[str]:
        """Ids of jobs that are ``running`` or ``cancelling``, sorted."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.active_key)
            (members,) = await pipe.execute()
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    @property
    def index_key(self) -> str:
        """The sorted set of this kind's ids (lexical order = creation order)."""
        return f"{self._prefix}index"

    def group_key(self, group: str) -> str:
        """The sorted set of the ids created in ``group``."""
        return f"{self._prefix}group:{group}"

    async def create(self, record: R, group: str | None = None) -> None:
        """Store a new record and add its id to the index (and to ``group``'s), in one transaction.

        Raises:
            StorageError: a record with this id already exists.
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(record.id), codec.encode(record), nx=True, ex=self._retention)
            pipe.zadd(self.index_key, {record.id: 0})
            pipe.xadd(stream_key(record.id), status_fields(record), maxlen=STREAM_MAXLEN, approximate=True)
            if group is not None:
                pipe.zadd(self.group_key(group), {record.id: 0})
            created, *_ = await pipe.execute()
        if not created:
            raise StorageError(f"job {record.id} already exists")

    async def list_group(self, group: str) -> list[R]:
        """Every record created in ``group``, newest first (ids whose record expired are skipped)."""
        found = await self._redis.zrevrangebylex(self.group_key(group), "+", "-")
        ids = [value.decode() if isinstance(value, bytes) else str(value) for value in found]
        if not ids:
            return []
        raws = await self._redis.mget([self.key(job_id) for job_id in ids])
        return [self._decode(raw) for raw in raws if raw is not None]

    async def list_page(
        self, *, limit: int, cursor: str | None = None, status: JobStatus | None = None
    ) -> tuple[list[R], str | None]:
        """Up to ``limit`` records, newest first, created before the record ``cursor`` (exclusive; ``None``
        starts at the newest), only those in ``status`` when given.

        Returns the records and the cursor of the next page: the last id examined when older ids remain,
        else ``None``. With a ``status`` filter the scan reads ids in batches until the page is full, so a
        rare status costs a longer scan. Ids whose record expired are dropped from the index on the way.
        """
        items: list[R] = []
        upper = f"({cursor}" if cursor else "+"
        batch = limit if status is None else max(limit, 100)
        while True:
            found = await self._redis.zrevrangebylex(self.index_key, upper, "-", start=0, num=batch)
            ids = [value.decode() if isinstance(value, bytes) else str(value) for value in found]
            if not ids:
                return items, None
            raws = await self._redis.mget([self.key(job_id) for job_id in ids])
            expired = []
            for job_id, raw in zip(ids, raws, strict=True):
                upper = f"({job_id}"
                if raw is None:
                    expired.append(job_id)
                    continue
                record = self._decode(raw)
                if status is None or record.status == status:
                    items.append(record)
                if len(items) == limit:
                    break
            if expired:
                await self._redis.zrem(self.index_key, *expired)
            if len(items) == limit:
                more = await self._redis.zrevrangebylex(self.index_key, upper, "-", start=0, num=1)
                return items, (upper[1:] if more else None)

    async def count_by_status(self, batch: int = 500) -> dict[str, int]:
        """How many records are in each status, read from the index in batches of ``batch`` ids."""
        counts: dict[str, int] = {}
        start = 0
        while True:
            found = await self._redis.zrange(self.index_key, start, start + batch - 1)
            if not found:
                return counts
            ids = [value.decode() if isinstance(value, bytes) else str(value) for value in found]
            for raw in await self._redis.mget([self.key(job_id) for job_id in ids]):
                if raw is not None:
                    status = self._decode(raw).status
                    counts[status] = counts.get(status, 0) + 1
            start += batch

    async def get(self, job_id: str) -> R | None:
        """The record, or ``None`` when there is none."""
        raw = await self._redis.get(self.key(job_id))
        return None if raw is None else self._decode(raw)

    async def update(self, job_id: str, change: Callable[[R], R]) -> R | None:
        """Apply ``change`` to the stored record atomically.

        Returns the written record, or ``None`` when the change would make a transition that is not allowed
        (e.g. a late ``running`` write to a ``succeeded`` job), in which case nothing is written.

        Raises:
            RecordNotFound: no record has this id.
        """
        key = self.key(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise RecordNotFound(f"no job record {job_id}")
                    current = self._decode(raw)
                    updated = change(current)
                    if not transition_allowed(current.status, updated.status):
                        await pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.set(key, codec.encode(updated), ex=self._retention)
                    if updated.status in ACTIVE_STATUSES:
                        pipe.sadd(self.active_key, job_id)
                    else:
                        pipe.srem(self.active_key, job_id)
                    if updated.status != current.status or updated.error != current.error:
                        # Live streams see the change in the same transaction as the record.
                        stream = stream_key(job_id)
                        pipe.xadd(stream, status_fields(updated), maxlen=STREAM_MAXLEN, approximate=True)
                        if updated.status in TERMINAL_STATUSES:
                            pipe.expire(stream, FINISHED_STREAM_TTL_SECONDS)
                        else:
                            pipe.persist(stream)  # a resumed run's stream lives as long as the run
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def mark_running(self, job_id: str) -> R | None:
        """Move the job to ``running`` and count the attempt. ``None`` when it must not run: it is terminal,
        or a cancel is pending (which this completes, since nothing runs it any more)."""
        now = utcnow()
        started = await self.update(
            job_id,
            lambda r: msgspec.structs.replace(
                r, status="running", started_at=now, updated_at=now, attempts=r.attempts + 1
            ),
        )
        if started is None:
            await self.finish_cancel(job_id)
        return started

    async def request_cancel(self, job_id: str) -> R | None:
        """Cancel a queued job at once (``cancelled``) or ask a running one to stop (``cancelling``).
        Idempotent while cancelling. ``None`` when the job is already terminal (nothing written).

        Raises:
            RecordNotFound: no record has this id.
        """
        now = utcnow()

        def cancel(record: R) -> R:
            if record.status == "queued":
                return msgspec.structs.replace(record, status="cancelled", finished_at=now, updated_at=now)
            return msgspec.structs.replace(record, status="cancelling", updated_at=now)

        return await self.update(job_id, cancel)

    async def finish_cancel(self, job_id: str) -> bool:
        """Move a ``cancelling`` job to ``cancelled``; True when it did (False for any other status)."""
        now = utcnow()
        record = await self.get(job_id)
        if record is None or record.status != "cancelling":
            return False
        done = await self.update(
            job_id,
            lambda r: (
                r
                if r.status != "cancelling"
                else msgspec.structs.replace(r, status="cancelled", finished_at=now, updated_at=now)
            ),
        )
        return done is not None and done.status == "cancelled"

    async def mark_failed(self, job_id: str, error: JobError) -> R | None:
        """Move the job to ``failed`` with ``error``; ``None`` (nothing written) when it is already terminal."""
        now = utcnow()
        return await self.update(
            job_id, lambda r: msgspec.structs.replace(r, status="failed", finished_at=now, updated_at=now, error=error)
        )

    def _decode(self, raw: object) -> R:
        if not isinstance(raw, bytes | str):
            raise StorageError(f"unexpected Redis value of type {type(raw).__name__}")
        try:
            return codec.decode(raw, self._type)
        except msgspec.ValidationError as exc:
            raise StorageError(f"stored job record does not decode: {exc}") from exc


TOKENIZER_PREFIX = "mt:tokenizer:"
RUN_PREFIX = "mt:run:"
EVAL_PREFIX = "mt:eval:"


def tokenizer_jobs(redis: Redis) -> JobStore[TokenizerJob]:
    """The store of tokenizer job records."""
    return JobStore(redis, TokenizerJob, TOKENIZER_PREFIX)


def run_jobs(redis: Redis) -> JobStore[RunJob]:
    """The store of training run records."""
    return JobStore(redis, RunJob, RUN_PREFIX)


def eval_jobs(redis: Redis) -> JobStore[EvalJob]:
    """The store of evaluation records, grouped by run id."""
    return JobStore(redis, EvalJob, EVAL_PREFIX)
