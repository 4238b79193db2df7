"""The tokenizer worker's arq wiring: a thin task that calls ``run_tokenizer_job``, and the reaper of
tokenizer jobs whose worker died (requeued while they have attempts left: training starts over and, being
deterministic, writes the same artifacts)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from arq.worker import Worker
from redis.asyncio import Redis

from mt_contracts.queue import TRAIN_TOKENIZER_TASK
from mt_contracts.settings import WorkerServiceSettings
from mt_storage.events import LivePublisher
from mt_storage.jobs import tokenizer_jobs
from mt_storage.layout import Layout
from mt_storage.queue import ArqJobQueue, build_worker
from mt_storage.reaper import Reaper, attempts_left
from mt_storage.store import Mirror, StoreError, open_store
from mt_tokenizer_worker.training import run_tokenizer_job

logger = logging.getLogger(__name__)


def create_worker(settings: WorkerServiceSettings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    """The arq worker for ``settings.queue.tokenizer``."""
    layout = Layout.from_settings(settings.app)
    redis = Redis.from_url(settings.redis.dsn)
    store = tokenizer_jobs(redis)
    publisher = LivePublisher(redis)
    mirror = Mirror(open_store(settings.storage), layout)

    async def upload(out_dir: Path) -> None:
        await asyncio.to_thread(mirror.push, out_dir)

    async def handle(tokenizer_id: str) -> None:
        # With an object store the folder is uploaded (manifest last) before the job is recorded succeeded,
        # so whoever sees the status can read it; whatever the ending, the rest (its log) after.
        try:
            await run_tokenizer_job(
                store, layout, tokenizer_id, settings.worker, publisher=publisher, before_succeed=upload
            )
        finally:
            # With an object store: the folder (manifest last, once committed) and its log.
            try:
                await asyncio.to_thread(mirror.push, layout.tokenizer_dir(tokenizer_id))
            except StoreError as exc:
                logger.error(
                    "tokenizer upload failed",
                    extra={"event": "store_error", "job_id": tokenizer_id, "error": str(exc)},
                )

    async def shutdown() -> None:
        await publisher.aclose()
        await redis.aclose()

    async def reaper() -> None:
        queue = await ArqJobQueue.connect(settings.redis.dsn)
        try:
            await Reaper(
                store,
                queue,
                settings.queue.tokenizer,
                kind="tokenizer",
                stall_after_seconds=settings.app.stall_after_seconds,
                cannot_retry=attempts_left(settings.worker.max_tries),
                advice=lambda tokenizer_id: "submit the tokenizer job again",
            ).run_forever()
        finally:
            await queue.close()

    return build_worker(
        task=TRAIN_TOKENIZER_TASK,
        handler=handle,
        endings=store,
        queue_name=settings.queue.tokenizer,
        redis_url=settings.redis.dsn,
        settings=settings.worker,
        timeout_seconds=settings.worker.tokenizer_job_timeout,
        burst=burst,
        handle_signals=handle_signals,
        on_shutdown=shutdown,
        background=reaper,
    )
