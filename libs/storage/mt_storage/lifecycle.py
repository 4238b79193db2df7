"""The one writer of a job's status: the transitions of ``mt_contracts.lifecycle`` applied to Redis records,
with one owner at a time.

``Lifecycle.start`` begins an attempt and returns its ``Lease``, whose fencing token (``<attempt>:<random>``)
is stored in the record as ``owner``. The worker supervising the attempt renews the lease (``heartbeat``)
for as long as its child process lives, and every write of the attempt (progress, checkpoint, its ending)
goes through the lease, which checks the token in the same transaction as the write: after the reaper handed
the job to another worker (``requeue`` clears ``owner``) or another attempt started, a stale owner's write
raises ``LeaseLost`` and writes nothing. A lease is fresh while its last renewal is at most
``stall_after_seconds`` old; ``start`` and the reaper's transitions never take a job whose lease is fresh.
(Martin Kleppmann, "How to do distributed locking", 2016: fencing tokens.)

Every write that ends a job also writes its webhook event to the outbox (``mt_storage.outbox``) in the
same transaction, and so does a reaper's take-back of a stalled run (``run.stalled``, once per stall: the
transition that takes the job out of ``running``/``cancelling`` happens once), so each event exists exactly
when its transition does, however many workers race for it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic

import msgspec

from mt_contracts.jobs import Job, JobError, JobStatus, utcnow
from mt_contracts.lifecycle import JobKind, Transition, next_status
from mt_storage import StorageError
from mt_storage.jobs import ACTIVE_STATUSES, JobStore, R
from mt_storage.outbox import outbox_entries

Change = Callable[[R], R]


class LeaseLost(StorageError):
    """The attempt no longer owns its job (handed to another worker, or ended): its holder must stop and
    write nothing more."""


class TransitionRefused(LeaseLost):
    """A transition that the job's kind does not allow from its current status (for a lease holder: its job
    ended or moved on without it)."""


def last_sign_of_life(job: Job) -> datetime:
    """When the job's lease was last renewed (its start, or its last write, before the first heartbeat)."""
    return job.heartbeat_at or job.started_at or job.updated_at


def is_stalled(job: Job, now: datetime, stall_after_seconds: float) -> bool:
    """True when ``job`` is ``running`` or ``cancelling`` but its lease was not renewed for more than
    ``stall_after_seconds`` (its worker is gone, or cannot reach Redis)."""
    return job.status in ACTIVE_STATUSES and now - last_sign_of_life(job) > timedelta(seconds=stall_after_seconds)


def shown(job: R, now: datetime, stall_after_seconds: float) -> R:
    """``job`` as clients see it: ``stalled`` when ``is_stalled`` (derived here, never stored)."""
    return msgspec.structs.replace(job, status="stalled") if is_stalled(job, now, stall_after_seconds) else job


def _moved(record: R, status: JobStatus, now: datetime, **changes: object) -> R:
    """``record`` in ``status`` (``finished_at`` set when it ends), with ``changes``."""
    ending = {"finished_at": now} if status in {"succeeded", "failed", "cancelled"} else {}
    return msgspec.structs.replace(record, status=status, updated_at=now, **ending, **changes)


class Lifecycle(Generic[R]):
    """The transitions of ``kind`` jobs kept in ``store``; leases go stale after ``stall_after_seconds``."""

    def __init__(self, store: JobStore[R], kind: JobKind, stall_after_seconds: float) -> None:
        self.store = store
        self.kind = kind
        self.stall_after_seconds = stall_after_seconds

    def _to(self, transition: Transition, current: JobStatus) -> JobStatus | None:
        return next_status(self.kind, transition, current)

    async def _transact(self, job_id: str, decide: Callable[[R], R | None], *, stalled: bool = False) -> R | None:
        """``store.transact`` with the webhook events of the write in its transaction (``outbox_entries``)."""
        return await self.store.transact(
            job_id, decide, lambda before, after: outbox_entries(self.kind, before, after, stalled=stalled)
        )

    async def create(self, record: R, group: str | None = None, *, mark: str | None = None) -> bool:
        """Store a new ``queued`` job; with ``mark``, whether that key exists, read in the same transaction
        after the write (see ``JobStore.create``)."""
        return await self.store.create(record, group, mark=mark)

    async def start(self, job_id: str) -> Lease[R] | None:
        """Begin an attempt: a ``queued`` job, or a ``running`` one whose lease is stale, becomes ``running``
        with ``attempts + 1`` and a new owner. ``None`` when it must not run now: it ended, its lease is
        fresh (another worker runs it), or a cancel was pending (which this completes, since nothing runs it).
        """
        token = ""
        now = utcnow()

        def decide(record: R) -> R | None:
            nonlocal token
            target = self._to("start", record.status)
            if target is None:
                return None
            if record.status in ACTIVE_STATUSES and not is_stalled(record, now, self.stall_after_seconds):
                return None
            if target == "cancelled":
                return _moved(record, target, now, owner=None)
            token = f"{record.attempts + 1}:{secrets.token_hex(8)}"
            return _moved(
                record, target, now, started_at=now, heartbeat_at=now, attempts=record.attempts + 1, owner=token
            )

        written = await self._transact(job_id, decide)
        if written is None or written.owner != token or not token:
            return None
        return Lease(self, written, token)

    async def cancel(self, job_id: str) -> R | None:
        """A user's cancel: a queued job ends ``cancelled`` at once, a running one turns ``cancelling`` until
        its worker stopped it. Idempotent while cancelling; ``None`` (nothing written) once the job ended.

        Raises:
            RecordNotFound: no record has this id.
        """
        now = utcnow()

        def decide(record: R) -> R | None:
            if record.status == "cancelling":
                return record
            target = self._to("cancel", record.status)
            return None if target is None else _moved(record, target, now)

        return await self._transact(job_id, decide)

    async def resume(self, job_id: str, change: Change[R]) -> R | None:
        """Put an ended job back on the queue with ``change`` applied (its new request); ``None`` when the
        kind or the status does not allow it."""
        now = utcnow()

        def decide(record: R) -> R | None:
            target = self._to("resume", record.status)
            if target is None:
                return None
            resumed = _moved(change(record), target, now, error=None, finished_at=None, attempts=0, owner=None)
            return msgspec.structs.replace(resumed, restarts=0)

        return await self._transact(job_id, decide)

    async def fail_queued(self, job_id: str, error: JobError) -> R | None:
        """Fail a job nobody runs yet (it could not be enqueued); ``None`` when it is no longer queued."""
        now = utcnow()
        return await self._transact(
            job_id, lambda r: _moved(r, "failed", now, error=error) if r.status == "queued" else None
        )

    async def reap(self, job_id: str, transition: Transition, error: JobError | None = None) -> R | None:
        """A reaper's transition of a job whose lease is stale: ``requeue`` (back on the queue, owner
        cleared), ``fail`` (with ``error``) or ``cancel`` (a pending cancel completed). ``None`` when the
        lease is fresh again or the transition is not allowed from the job's status."""
        now = utcnow()

        def decide(record: R) -> R | None:
            if not is_stalled(record, now, self.stall_after_seconds):
                return None
            if transition == "cancel" and record.status != "cancelling":
                return None
            target = self._to(transition, record.status)
            if target is None:
                return None
            return _moved(record, target, now, owner=None, **({"error": error} if error is not None else {}))

        return await self._transact(job_id, decide, stalled=True)


class Lease(Generic[R]):
    """One attempt's ownership of its job: every write checks ``token`` against the record's ``owner``."""

    def __init__(self, lifecycle: Lifecycle[R], job: R, token: str) -> None:
        self.lifecycle = lifecycle
        self.job = job
        self.token = token

    @property
    def job_id(self) -> str:
        return self.job.id

    async def _write(self, transition: Transition, change: Change[R] | None = None, **fields: object) -> R:
        now = utcnow()

        def decide(record: R) -> R:
            if record.owner != self.token:
                raise LeaseLost(
                    f"{self.lifecycle.kind} {record.id} is owned by {record.owner or 'no worker'} now, "
                    f"not by attempt {self.token}"
                )
            target = self.lifecycle._to(transition, record.status)
            if target is None:
                raise TransitionRefused(f"{transition} is not allowed for a {record.status} {self.lifecycle.kind}")
            changed = change(record) if change is not None else record
            if target == record.status:
                return msgspec.structs.replace(changed, updated_at=now, heartbeat_at=now, **fields)
            return _moved(changed, target, now, heartbeat_at=now, **fields)

        written = await self.lifecycle._transact(self.job_id, decide)
        if written is None:
            raise LeaseLost(f"{self.lifecycle.kind} {self.job_id} was not written")
        self.job = written
        return written

    async def heartbeat(self) -> R:
        """Renew the lease (``heartbeat_at``)."""
        return await self._write("heartbeat")

    async def progress(self, change: Change[R]) -> R:
        """Record progress (a report, a validation result, a resumed step) with ``change``."""
        return await self._write("progress", change)

    async def checkpoint(self, change: Change[R]) -> R:
        """Record a written checkpoint with ``change``."""
        return await self._write("checkpoint", change)

    async def succeed(self, change: Change[R]) -> R:
        """End ``succeeded`` with ``change`` (the result)."""
        return await self._write("succeed", change)

    async def fail(self, error: JobError) -> R:
        """End ``failed`` with ``error``."""
        return await self._write("fail", error=error)

    async def finish_cancel(self) -> R:
        """End a ``cancelling`` job ``cancelled`` once its child stopped.

        Raises:
            TransitionRefused: the job is not ``cancelling``.
        """
        if self.job.status != "cancelling":
            current = await self.lifecycle.store.get(self.job_id)
            if current is None or current.status != "cancelling":
                raise TransitionRefused(f"{self.lifecycle.kind} {self.job_id} is not cancelling")
        return await self._write("cancel")

    async def requeue(self) -> R:
        """Hand the job back to the queue (worker shutdown), for any worker to take over."""
        return await self._write("requeue", owner=None)

    async def restarted(self) -> R:
        """Count one more child process of this attempt (a restart after a crash, not a new attempt)."""
        return await self._write("progress", lambda r: msgspec.structs.replace(r, restarts=r.restarts + 1))
