"""The job queue: arq on Redis behind a small Protocol, and the one place arq's loose typing is touched.

Job semantics are declared here, not left to arq's defaults (300 s timeout, 5 tries, hourly health check,
0.5 s polling): every job's arq id is our job id, so enqueueing twice is a no-op; timeouts, tries and
abort are explicit; jobs travel as MessagePack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.worker import Function, Worker, func

from mt_contracts.queue import deserialize_job, serialize_job
from mt_contracts.settings import WorkerSettings

HEALTH_CHECK_SUFFIX = ":health-check"


class JobQueue(Protocol):
    """Puts a job on a named queue. ``job_id`` is our id; enqueueing an id already queued does nothing."""

    async def enqueue(self, task: str, job_id: str, queue_name: str) -> bool: ...


class ArqJobQueue:
    """``JobQueue`` on an arq Redis pool."""

    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, redis_url: str) -> ArqJobQueue:
        """Open a pool to ``redis_url`` (a redis:// DSN)."""
        pool = await create_pool(
            RedisSettings.from_dsn(redis_url), job_serializer=serialize_job, job_deserializer=deserialize_job
        )
        return cls(pool)

    async def enqueue(self, task: str, job_id: str, queue_name: str) -> bool:
        """Returns False when a job with this id is already queued, running or has a result."""
        job = await self.pool.enqueue_job(task, job_id, _job_id=job_id, _queue_name=queue_name)
        return job is not None

    async def close(self) -> None:
        await self.pool.aclose()


class JobContext:
    """The typed part of arq's per-job ``ctx`` dict."""

    def __init__(self, job_try: int) -> None:
        self.job_try = job_try

    @classmethod
    def from_ctx(cls, ctx: dict[str, object]) -> JobContext:
        job_try = ctx.get("job_try")
        return cls(job_try=job_try if isinstance(job_try, int) else 1)


JobHandler = Callable[[JobContext, str], Awaitable[None]]


def build_worker(
    *,
    task: str,
    handler: JobHandler,
    queue_name: str,
    redis_url: str,
    settings: WorkerSettings,
    timeout_seconds: int,
    burst: bool = False,
    handle_signals: bool = True,
) -> Worker:
    """An arq worker that runs ``handler(context, job_id)`` for jobs named ``task`` on ``queue_name``.

    arq's own timeout is set a minute past ``timeout_seconds`` so the handler's own deadline fires first and
    records a proper error. The health key ``<queue_name>:health-check`` is refreshed every
    ``settings.health_check_interval`` seconds (it expires one second after that).
    """

    async def run(ctx: dict[str, object], job_id: str) -> None:
        await handler(JobContext.from_ctx(ctx), job_id)

    functions: Sequence[Function] = [
        func(run, name=task, timeout=timeout_seconds + 60, max_tries=settings.max_tries, keep_result=3600)
    ]
    return Worker(
        functions=functions,
        queue_name=queue_name,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=burst,
        handle_signals=handle_signals,
        max_jobs=settings.max_jobs,
        poll_delay=settings.poll_delay,
        health_check_interval=settings.health_check_interval,
        allow_abort_jobs=True,
        job_completion_wait=int(settings.shutdown_grace),
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
    )
