"""The webhook worker's wiring: the delivery task on ``QUEUE__WEBHOOKS`` and the outbox dispatcher beside it.

Deliveries get a service of their own rather than a place in a training worker: those run one long job
at a time (``WORKER__MAX_JOBS``), so an event would wait hours behind a training run, and a delivery is a
short network call that many can make at once (``WEBHOOKS__CONCURRENCY``) without torch or the artifact
volumes. The dispatcher runs in every replica; dispatching is idempotent, so replicas need no election.
"""

from __future__ import annotations

import asyncio

import httpx
import msgspec
from arq.worker import Worker
from redis.asyncio import Redis

from mt_contracts.settings import WorkerServiceSettings
from mt_storage.queue import JobQueue, QueueTask, build_worker
from mt_storage.webhooks import DELIVER_TASK, Deliverer, Dispatcher, WebhookStore


def create_worker(settings: WorkerServiceSettings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    """The arq worker for ``settings.queue.webhooks``: up to ``WEBHOOKS__CONCURRENCY`` attempts at once, each
    bounded by ``WEBHOOKS__TIMEOUT`` per HTTP phase; redirects are not followed (a redirect could lead to an
    address the SSRF check never saw)."""
    hooks = settings.webhooks
    redis = Redis.from_url(settings.redis.dsn)
    store = WebhookStore(redis)
    client = httpx.AsyncClient(timeout=httpx.Timeout(hooks.timeout), follow_redirects=False)
    deliverers: list[Deliverer] = []
    ready = asyncio.Event()

    async def deliver(job_id: str, job_try: int) -> None:
        await ready.wait()  # the queue connection arrives with the background task, at start-up
        await deliverers[0].deliver(job_id)

    async def dispatcher(queue: JobQueue) -> None:
        deliverers.append(Deliverer(store, queue, settings.queue.webhooks, hooks, client))
        ready.set()
        await Dispatcher(store, queue, settings.queue.webhooks).run_forever()

    async def shutdown() -> None:
        await client.aclose()
        await redis.aclose()

    worker_settings = msgspec.structs.replace(settings.worker, max_jobs=hooks.concurrency)
    # A whole HTTP attempt takes at most about four timeouts (connect, write, read, pool).
    timeout = int(4 * hooks.timeout) + 1
    return build_worker(
        tasks=[QueueTask(DELIVER_TASK, deliver, timeout)],
        queue_name=settings.queue.webhooks,
        redis_url=settings.redis.dsn,
        settings=worker_settings,
        burst=burst,
        handle_signals=handle_signals,
        on_shutdown=shutdown,
        background=dispatcher,
    )
