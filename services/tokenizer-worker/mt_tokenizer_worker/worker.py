"""The tokenizer worker's arq wiring: a thin task that calls ``run_tokenizer_job``."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from arq.worker import Worker
from redis.asyncio import Redis

from mt_contracts.jobs import JobError
from mt_contracts.queue import TRAIN_TOKENIZER_TASK
from mt_contracts.settings import WorkerServiceSettings
from mt_storage.jobs import tokenizer_jobs, utcnow
from mt_storage.layout import Layout
from mt_storage.queue import JobContext, build_worker
from mt_tokenizer_worker.training import run_tokenizer_job

logger = logging.getLogger(__name__)


def create_worker(settings: WorkerServiceSettings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    """The arq worker for ``settings.queue.tokenizer``."""
    layout = Layout.from_settings(settings.app)
    redis = Redis.from_url(settings.redis.url)
    store = tokenizer_jobs(redis)
    timeout = settings.worker.tokenizer_job_timeout

    async def handle(context: JobContext, tokenizer_id: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                await run_tokenizer_job(store, layout, tokenizer_id)
        except TimeoutError:
            error = JobError(
                code="timeout", message=f"training took longer than WORKER__TOKENIZER_JOB_TIMEOUT={timeout} s"
            )
            await _fail(tokenizer_id, error)
        except asyncio.CancelledError:
            if context.job_try >= settings.worker.max_tries:
                error = JobError(
                    code="worker_lost",
                    message=f"the worker stopped during the job {context.job_try} time(s); submit it again",
                )
                await asyncio.shield(_fail(tokenizer_id, error))
            raise

    async def _fail(tokenizer_id: str, error: JobError) -> None:
        now = utcnow()
        await store.update(
            tokenizer_id,
            lambda r: msgspec.structs.replace(r, status="failed", finished_at=now, updated_at=now, error=error),
        )

    return build_worker(
        task=TRAIN_TOKENIZER_TASK,
        handler=handle,
        queue_name=settings.queue.tokenizer,
        redis_url=settings.redis.url,
        settings=settings.worker,
        timeout_seconds=timeout,
        burst=burst,
        handle_signals=handle_signals,
    )
