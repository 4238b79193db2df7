"""The reaper: takes back runs whose training process or worker died.

A run is stalled when it is ``running`` or ``cancelling`` and its last heartbeat is older than
``APP__STALL_AFTER_SECONDS``. A stalled run that was being cancelled ends ``cancelled``; one with a
checkpoint and attempts left goes back on the queue (any trainer worker resumes it from the checkpoint);
any other fails with ``worker_lost``. Every trainer worker runs the reaper; the guarded status writes make
two reapers acting on one run harmless.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from redis.exceptions import RedisError

from mt_contracts.jobs import JobError, RunJob
from mt_contracts.settings import WorkerServiceSettings
from mt_storage.checkpoints import read_index
from mt_storage.jobs import JobStore, is_stalled, utcnow
from mt_storage.layout import Layout
from mt_storage.queue import JobQueue

logger = logging.getLogger(__name__)


async def reap_once(
    store: JobStore[RunJob], queue: JobQueue, layout: Layout, settings: WorkerServiceSettings
) -> dict[str, str]:
    """One pass over the active runs; returns ``{run_id: action}`` for each run it acted on
    (``cancelled``, ``requeued`` or ``failed``)."""
    actions: dict[str, str] = {}
    now = utcnow()
    for run_id in await store.active_ids():
        job = await store.get(run_id)
        if job is None or not is_stalled(job, now, settings.app.stall_after_seconds):
            continue
        silent = int((now - (job.heartbeat_at or job.started_at or job.updated_at)).total_seconds())
        if job.status == "cancelling":
            if await store.finish_cancel(run_id):
                await queue.discard(run_id, settings.queue.training)
                actions[run_id] = "cancelled"
            continue
        checkpoints = read_index(layout.run_dir(run_id))
        if checkpoints and job.attempts < settings.worker.max_tries:
            requeued = await store.update(
                run_id,
                lambda r: (
                    r if r.status != "running" else msgspec.structs.replace(r, status="queued", updated_at=utcnow())
                ),
            )
            if requeued is not None and requeued.status == "queued":
                await queue.release(run_id)
                actions[run_id] = "requeued"
                logger.warning(
                    "stalled run requeued",
                    extra={"event": "run_requeued", "job_id": run_id, "silent_seconds": silent,
                           "checkpoint_step": checkpoints[-1].step},
                )  # fmt: skip
            continue
        reason = "it has no checkpoint" if not checkpoints else f"it used its {job.attempts} attempts"
        error = JobError(
            code="worker_lost",
            message=f"the run's worker stopped answering {silent} s ago and {reason}; "
            f"POST /runs/{run_id}/resume to continue from a checkpoint, or submit it again",
        )
        if await store.mark_failed(run_id, error) is not None:
            await queue.discard(run_id, settings.queue.training)
            actions[run_id] = "failed"
            logger.warning(
                "stalled run failed", extra={"event": "run_lost", "job_id": run_id, "silent_seconds": silent}
            )
    return actions


async def reap_forever(
    store: JobStore[RunJob], queue: JobQueue, layout: Layout, settings: WorkerServiceSettings
) -> None:
    """Run ``reap_once`` every quarter of the stall threshold until cancelled."""
    interval = max(1.0, settings.app.stall_after_seconds / 4)
    while True:
        try:
            await reap_once(store, queue, layout, settings)
        except (RedisError, OSError):
            logger.exception("reaper pass failed", extra={"event": "reaper_error"})
        await asyncio.sleep(interval)
