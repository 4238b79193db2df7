"""The reaper: takes back jobs whose worker died.

arq keeps a job "in progress" for its whole timeout (hours for a training run) after its worker is
killed, so without a reaper the job would show ``running`` that long. A job is stalled when it is
``running`` or ``cancelling`` and its last heartbeat (``Job.heartbeat_at``) is older than
``APP__STALL_AFTER_SECONDS``. A stalled job that was being cancelled ends ``cancelled``; one that may run
again (``cannot_retry`` gives no reason against it) goes back on its queue, released for any worker; any
other fails with ``worker_lost`` and a message saying what to do. Every worker of a kind runs the reaper
for its queue; the guarded status writes make two reapers acting on one job harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic

import msgspec
from redis.exceptions import RedisError

from mt_contracts.jobs import Job, JobError
from mt_storage.jobs import JobStore, R, is_stalled, utcnow
from mt_storage.queue import JobQueue

logger = logging.getLogger(__name__)


def attempts_left(max_tries: int) -> Callable[[Job], str | None]:
    """A ``cannot_retry`` for jobs that simply start over: a reason once a job has used ``max_tries``
    attempts (``WORKER__MAX_TRIES``)."""

    def cannot_retry(job: Job) -> str | None:
        return f"it used its {job.attempts} attempts" if job.attempts >= max_tries else None

    return cannot_retry


class Reaper(Generic[R]):
    """Reaps one kind of job (``kind``: ``run``, ``tokenizer``, ``evaluation``) on ``queue_name``.

    ``cannot_retry(job)`` is why a stalled job must not run again (``None``: it may); ``advice(job_id)``
    ends the ``worker_lost`` message with what the user can do.
    """

    def __init__(
        self,
        store: JobStore[R],
        queue: JobQueue,
        queue_name: str,
        *,
        kind: str,
        stall_after_seconds: float,
        cannot_retry: Callable[[R], str | None],
        advice: Callable[[str], str],
    ) -> None:
        self._store = store
        self._queue = queue
        self._queue_name = queue_name
        self._kind = kind
        self._stall_after = stall_after_seconds
        self._cannot_retry = cannot_retry
        self._advice = advice

    async def reap_once(self) -> dict[str, str]:
        """One pass over the active jobs; returns ``{job_id: action}`` for each job it acted on
        (``cancelled``, ``requeued`` or ``failed``)."""
        actions: dict[str, str] = {}
        now = utcnow()
        for job_id in await self._store.active_ids():
            job = await self._store.get(job_id)
            if job is None or not is_stalled(job, now, self._stall_after):
                continue
            silent = int((now - (job.heartbeat_at or job.started_at or job.updated_at)).total_seconds())
            action = await self._reap(job, silent)
            if action is not None:
                actions[job_id] = action
                logger.warning(
                    f"stalled {self._kind} {action}",
                    extra={"event": f"stalled_{action}", "job_id": job_id, "silent_seconds": silent},
                )
        return actions

    async def _reap(self, job: R, silent: int) -> str | None:
        if job.status == "cancelling":
            if await self._store.finish_cancel(job.id):
                await self._queue.discard(job.id, self._queue_name)
                return "cancelled"
            return None
        reason = self._cannot_retry(job)
        if reason is None:
            requeued = await self._store.update(job.id, _requeued)
            if requeued is not None and requeued.status == "queued":
                await self._queue.release(job.id)
                return "requeued"
            return None
        error = JobError(
            code="worker_lost",
            message=f"the {self._kind}'s worker stopped answering {silent} s ago and {reason}; {self._advice(job.id)}",
        )
        if await self._store.mark_failed(job.id, error) is not None:
            await self._queue.discard(job.id, self._queue_name)
            return "failed"
        return None

    async def run_forever(self) -> None:
        """Run ``reap_once`` every quarter of the stall threshold (at least every second) until cancelled."""
        interval = max(1.0, self._stall_after / 4)
        while True:
            try:
                await self.reap_once()
            except (RedisError, OSError):
                logger.exception("reaper pass failed", extra={"event": "reaper_error", "kind": self._kind})
            await asyncio.sleep(interval)


def _requeued(record: R) -> R:
    """``record`` back in ``queued`` if it is still ``running`` (unchanged otherwise)."""
    if record.status != "running":
        return record
    return msgspec.structs.replace(record, status="queued", updated_at=utcnow())
