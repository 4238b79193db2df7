"""Job records in Redis, one JSON value per job, written by optimistic transactions.

``JobStore.transact`` is the one write: a WATCH / MULTI / EXEC transaction that reads the record, asks a
``decide`` function for the new one (or ``None``: write nothing) and retries when another writer got there
first. Only ``mt_storage.lifecycle`` calls it: the lifecycle decides, by the named transitions of
``mt_contracts.lifecycle`` and the attempt's fencing token, what a job's status may become.

Each kind also keeps an index, a sorted set ``<prefix>index`` of its ids with score 0, written by
``create``: ids are ULIDs, so their lexical order is creation order and ``list_page`` reads it newest first.
Creating a record and every status change also append a ``status`` event to the job's live event stream
(``mt_storage.events``) in the same transaction. A job's stream expires ``FINISHED_STREAM_TTL_SECONDS``
after the job ends (a later resume keeps it again); ``logs.jsonl`` keeps every line for good, and a stream
request for a job whose stream expired ends at once with the record's status.
A record created in a ``group`` (the evaluations of one run) is also indexed in ``<prefix>group:<group>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from mt_contracts import codec
from mt_contracts.jobs import TERMINAL_STATUSES, EvalJob, Job, JobStatus, RunJob, TokenizerJob
from mt_storage import RecordNotFound, StorageError
from mt_storage.events import STREAM_MAXLEN, status_fields, stream_key
from mt_storage.pipelines import pipeline

ACTIVE_STATUSES = frozenset({"running", "cancelling"})
# How long a finished job's live event stream stays in Redis (late readers and resumes): 7 days.
FINISHED_STREAM_TTL_SECONDS = 7 * 24 * 3600

R = TypeVar("R", bound=Job)
# What else a write appends, in its own transaction: ``(stream key, event bytes)`` pairs computed from the
# record before and after (the lifecycle's webhook outbox entries).
Appends = Callable[[R, R], Sequence[tuple[str, bytes]]]


class JobStore(Generic[R]):
    """Records of one kind (``record_type``) under ``<prefix><id>`` keys.

    ``<prefix>active`` is the set of ids whose status is ``running`` or ``cancelling`` and ``<prefix>queued``
    those ``queued``, kept in the same transaction as each write, so a reaper can find jobs whose worker died
    and queued jobs that arq no longer holds. ``retention_seconds`` bounds
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

    @property
    def queued_key(self) -> str:
        """The set of ids whose status is ``queued`` (kept like the active set)."""
        return f"{self._prefix}queued"

    async def queued_ids(self) -> list[str]:
        """Ids of jobs that are ``queued``, sorted."""
        async with pipeline(self._redis, transaction=False) as pipe:
            pipe.smembers(self.queued_key)
            (members,) = await pipe.execute()
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def active_ids(self) -> list[str]:
        """Ids of jobs that are ``running`` or ``cancelling``, sorted."""
        async with pipeline(self._redis, transaction=False) as pipe:
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

    async def create(self, record: R, group: str | None = None, *, mark: str | None = None) -> bool:
        """Store a new ``queued`` record and add its id to the index (and to ``group``'s), in one
        transaction. Call it through ``Lifecycle.create``. With ``mark``, the same transaction then reads
        whether that key exists and returns it (``False`` without one): ``CorpusGuard.mark_key`` read after the
        record is stored, in one round trip.

        Raises:
            StorageError: a record with this id already exists, or it is not ``queued``.
        """
        if record.status != "queued":
            raise StorageError(f"a new job starts queued, not {record.status}")
        async with pipeline(self._redis, transaction=True) as pipe:
            pipe.set(self.key(record.id), codec.encode(record), nx=True, ex=self._retention)
            pipe.zadd(self.index_key, {record.id: 0})
            pipe.sadd(self.queued_key, record.id)
            pipe.xadd(stream_key(record.id), status_fields(record), maxlen=STREAM_MAXLEN, approximate=True)
            if group is not None:
                pipe.zadd(self.group_key(group), {record.id: 0})
            if mark is not None:
                pipe.exists(mark)
            created, *rest = await pipe.execute()
        if not created:
            raise StorageError(f"job {record.id} already exists")
        return mark is not None and bool(rest[-1])

    async def list_group(self, group: str) -> list[R]:
        """Every record created in ``group``, newest first (ids whose record expired are skipped)."""
        found = await self._redis.zrevrangebylex(self.group_key(group), "+", "-")
        ids = [value.decode() if isinstance(value, bytes) else str(value) for value in found]
        if not ids:
            return []
        raws = await self._redis.mget([self.key(job_id) for job_id in ids])
        return [self._decode(raw) for raw in raws if raw is not None]

    async def list_page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: JobStatus | None = None,
        keep: Callable[[R], bool] | None = None,
        max_scanned: int | None = None,
    ) -> tuple[list[R], str | None]:
        """Up to ``limit`` records, newest first, created before the record ``cursor`` (exclusive; ``None``
        starts at the newest), only those in ``status`` and those ``keep`` accepts, when given.

        Returns the records and the cursor of the next page: the last id examined when older ids remain,
        else ``None``. With a filter the scan reads ids in batches until the page is full, so a rare status
        costs a longer scan; ``max_scanned`` bounds it (the page may then be short, with a cursor to go on
        from). Ids whose record expired are dropped from the index on the way.
        """
        items: list[R] = []
        upper = f"({cursor}" if cursor else "+"
        batch = limit if status is None and keep is None else max(limit, 100)
        scanned = 0
        while True:
            if max_scanned is not None:
                if scanned >= max_scanned:
                    more = await self._redis.zrevrangebylex(self.index_key, upper, "-", start=0, num=1)
                    return items, (upper[1:] if more and upper != "+" else None)
                batch = min(batch, max_scanned - scanned)
            found = await self._redis.zrevrangebylex(self.index_key, upper, "-", start=0, num=batch)
            ids = [value.decode() if isinstance(value, bytes) else str(value) for value in found]
            scanned += len(ids)
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
                if (status is None or record.status == status) and (keep is None or keep(record)):
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

    async def transact(
        self, job_id: str, decide: Callable[[R], R | None], appends: Appends[R] | None = None
    ) -> R | None:
        """Replace the stored record with ``decide(current)`` atomically; ``None`` from ``decide`` writes
        nothing. ``decide`` may run more than once (when another writer got there first) and may raise to
        abort. Keeps the active set and, when the status or error changes, appends a ``status`` event to the
        job's live stream in the same transaction, with what ``appends(current, updated)`` gives (each
        ``(stream, data)`` as an ``event`` field), so those entries exist exactly when the write does.
        Returns the written record or ``None``.

        Raises:
            RecordNotFound: no record has this id.
        """
        key = self.key(job_id)
        async with pipeline(self._redis, transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise RecordNotFound(f"no job record {job_id}")
                    current = self._decode(raw)
                    updated = decide(current)
                    if updated is None:
                        await pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.set(key, codec.encode(updated), ex=self._retention)
                    if updated.status in ACTIVE_STATUSES:
                        pipe.sadd(self.active_key, job_id)
                    else:
                        pipe.srem(self.active_key, job_id)
                    if updated.status == "queued":
                        pipe.sadd(self.queued_key, job_id)
                    else:
                        pipe.srem(self.queued_key, job_id)
                    if updated.status != current.status or updated.error != current.error:
                        # Live streams see the change in the same transaction as the record.
                        stream = stream_key(job_id)
                        pipe.xadd(stream, status_fields(updated), maxlen=STREAM_MAXLEN, approximate=True)
                        if updated.status in TERMINAL_STATUSES:
                            pipe.expire(stream, FINISHED_STREAM_TTL_SECONDS)
                        else:
                            pipe.persist(stream)  # a resumed run's stream lives as long as the run
                    for outbox, data in appends(current, updated) if appends is not None else ():
                        pipe.xadd(outbox, {"event": data})
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

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
