"""The reaper: takes back jobs whose worker died.

arq keeps a job "in progress" for its whole timeout (hours for a training run) after its worker is
killed, so without a reaper the job would show ``running`` that long. A job is stalled when it is
``running`` or ``cancelling`` and its lease (``Job.heartbeat_at``, renewed by the supervising worker) is older
than ``APP__STALL_AFTER_SECONDS``. A stalled job that was being cancelled ends ``cancelled``; one that may run
again (``cannot_retry`` gives no reason against it) goes back on its queue, released for any worker; any
other fails with ``worker_lost`` and a message saying what to do. Every transition re-checks, in its
transaction, that the lease is still stale, so a reaper never takes a job whose owner renewed it meanwhile,
and two reapers acting on one job are harmless.

After Redis was unreachable (an outage, or this reaper's own start) the reaper waits one full stall period of
Redis answering before it reaps: every live owner has had that long to renew its lease, so an outage is
never mistaken for dead workers.

Each pass also puts back on the queue every job that has been ``queued`` for a stall period but that arq no
longer holds: arq forgets a job once a worker finished it, and a stale owner whose job the reaper had handed
to another worker finishes its arq job too; a record must never wait for a job that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic

from redis.exceptions import RedisError

from mt_contracts.jobs import Job, JobError, utcnow
from mt_storage.events import REDIS_DOWN
from mt_storage.jobs import R
from mt_storage.lifecycle import Lifecycle, is_stalled, last_sign_of_life
from mt_storage.queue import JobQueue

logger = logging.getLogger(__name__)


def attempts_left(max_tries: int) -> Callable[[Job], str | None]:
    """A ``cannot_retry`` for jobs that simply start over: a reason once a job has used ``max_tries``
    attempts (``WORKER__MAX_TRIES``)."""

    def cannot_retry(job: Job) -> str | None:
        return f"it used its {job.attempts} attempts" if job.attempts >= max_tries else None

    return cannot_retry


class Reaper(Generic[R]):
    """Reaps the jobs of ``lifecycle`` on ``queue_name``.

    ``cannot_retry(job)`` is why a stalled job must not run again (``None``: it may); ``advice(job_id)``
    ends the ``worker_lost`` message with what the user can do.
    """

    def __init__(
        self,
        lifecycle: Lifecycle[R],
        queue: JobQueue,
        queue_name: str,
        *,
        task: str,
        cannot_retry: Callable[[R], str | None],
        advice: Callable[[str], str],
    ) -> None:
        self._lifecycle = lifecycle
        self._queue = queue
        self._queue_name = queue_name
        self._task = task
        self._stall_after = lifecycle.stall_after_seconds
        self._cannot_retry = cannot_retry
        self._advice = advice

    async def reap_once(self) -> dict[str, str]:
        """One pass over the active and the queued jobs; returns ``{job_id: action}`` for each job it acted on
        (``cancelled``, ``requeued``, ``failed`` or ``enqueued``)."""
        actions: dict[str, str] = {}
        now = utcnow()
        store = self._lifecycle.store
        for job_id in await store.queued_ids():
            job = await store.get(job_id)
            waited = None if job is None else (now - job.updated_at).total_seconds()
            if job is None or job.status != "queued" or waited is None or waited <= self._stall_after:
                continue
            if not await self._queue.exists(job_id):
                await self._queue.requeue(self._task, job_id, self._queue_name)
                actions[job_id] = "enqueued"
                logger.warning(
                    f"queued {self._lifecycle.kind} enqueued again",
                    extra={"event": "orphan_enqueued", "job_id": job_id, "queued_seconds": int(waited)},
                )
        for job_id in await store.active_ids():
            job = await store.get(job_id)
            if job is None or not is_stalled(job, now, self._stall_after):
                continue
            silent = int((now - last_sign_of_life(job)).total_seconds())
            action = await self._reap(job, silent)
            if action is not None:
                actions[job_id] = action
                logger.warning(
                    f"stalled {self._lifecycle.kind} {action}",
                    extra={"event": f"stalled_{action}", "job_id": job_id, "silent_seconds": silent},
                )
        return actions

    async def _reap(self, job: R, silent: int) -> str | None:
        if job.status == "cancelling":
            if await self._lifecycle.reap(job.id, "cancel") is not None:
                await self._queue.discard(job.id, self._queue_name)
                return "cancelled"
            return None
        reason = self._cannot_retry(job)
        if reason is None:
            if await self._lifecycle.reap(job.id, "requeue") is not None:
                await self._queue.release(job.id)
                return "requeued"
            return None
        kind = self._lifecycle.kind
        error = JobError(
            code="worker_lost",
            message=f"the {kind}'s worker stopped answering {silent} s ago and {reason}; {self._advice(job.id)}",
        )
        if await self._lifecycle.reap(job.id, "fail", error) is not None:
            await self._queue.discard(job.id, self._queue_name)
            return "failed"
        return None

    async def run_forever(self) -> None:
        """Run ``reap_once`` every quarter of the stall threshold (at least every second) until cancelled,
        once Redis has answered for a whole stall period."""
        interval = max(1.0, self._stall_after / 4)
        answering_since = time.monotonic()
        while True:
            try:
                if time.monotonic() - answering_since >= self._stall_after:
                    await self.reap_once()
                else:
                    await self._lifecycle.store.active_ids()  # is Redis answering?
            except REDIS_DOWN as exc:
                answering_since = time.monotonic() + interval
                logger.warning(
                    "reaper waiting for redis", extra={"event": "reaper_waiting", "kind": self._lifecycle.kind,
                                                       "error": str(exc)},
                )  # fmt: skip
            except RedisError:
                logger.exception("reaper pass failed", extra={"event": "reaper_error", "kind": self._lifecycle.kind})
            await asyncio.sleep(interval)
