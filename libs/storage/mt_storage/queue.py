"""The job queue: arq on Redis behind a small Protocol, and the one place arq's loose typing is touched.

Job semantics are declared here, not left to arq's defaults (300 s timeout, 5 tries, hourly health check,
0.5 s polling): every job's arq id is our job id, so enqueueing twice is a no-op; timeouts, tries and
abort are explicit; jobs travel as MessagePack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Protocol

import msgspec
import redis
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.worker import Function, Worker, func

from mt_contracts.jobs import JobError
from mt_contracts.logs import configure_logging
from mt_contracts.queue import deserialize_job, serialize_job
from mt_contracts.settings import SettingsError, WorkerServiceSettings, WorkerSettings, from_env

HEALTH_CHECK_SUFFIX = ":health-check"


class JobQueue(Protocol):
    """Puts a job on a named queue (``job_id`` is our id; enqueueing an id already queued does nothing) and
    asks the worker running a job to stop it."""

    async def enqueue(self, task: str, job_id: str, queue_name: str) -> bool: ...

    async def abort(self, job_id: str) -> None: ...

    async def requeue(self, task: str, job_id: str, queue_name: str) -> bool: ...

    async def release(self, job_id: str) -> None: ...

    async def discard(self, job_id: str, queue_name: str) -> None: ...


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

    async def abort(self, job_id: str) -> None:
        """Ask arq to cancel the job's task; the worker polling the job's queue sees it within a poll."""
        await self.pool.zadd(abort_jobs_ss, {job_id: int(time.time() * 1000)})

    async def requeue(self, task: str, job_id: str, queue_name: str) -> bool:
        """Enqueue a job whose id already ran (a resume): forget arq's result, try count and any abort request
        first, so an earlier cancel does not stop the new run as it starts."""
        await self.pool.delete(result_key_prefix + job_id, retry_key_prefix + job_id, in_progress_key_prefix + job_id)
        await self.pool.zrem(abort_jobs_ss, job_id)
        return await self.enqueue(task, job_id, queue_name)

    async def release(self, job_id: str) -> None:
        """Let another worker take a job whose worker died: arq keeps a job's in-progress mark for its whole
        timeout, so without this a run would wait days for its retry."""
        await self.pool.delete(in_progress_key_prefix + job_id)

    async def discard(self, job_id: str, queue_name: str) -> None:
        """Remove a job from its queue and forget it, so no worker runs it again."""
        await self.pool.zrem(queue_name, job_id)
        await self.pool.zrem(abort_jobs_ss, job_id)
        await self.pool.delete(job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id)

    async def close(self) -> None:
        await self.pool.aclose()


JobHandler = Callable[[str], Awaitable[None]]


class JobEndings(Protocol):
    """How the worker records the endings a handler cannot see (``JobStore`` implements it)."""

    async def mark_failed(self, job_id: str, error: JobError) -> object: ...

    async def finish_cancel(self, job_id: str) -> bool: ...


class QueueTask(msgspec.Struct, frozen=True):
    """A further task a worker runs beside its main one: ``handler(job_id)`` for jobs named ``name``, its
    endings recorded through ``endings``, within ``timeout_seconds``."""

    name: str
    handler: JobHandler
    endings: JobEndings
    timeout_seconds: int


def build_worker(
    *,
    task: str,
    handler: JobHandler,
    endings: JobEndings,
    queue_name: str,
    redis_url: str,
    settings: WorkerSettings,
    timeout_seconds: int,
    burst: bool = False,
    handle_signals: bool = True,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    finish_jobs_on_shutdown: bool = True,
    background: Callable[[], Coroutine[object, object, None]] | None = None,
    extra_tasks: Sequence[QueueTask] = (),
) -> Worker:
    """An arq worker that runs ``handler(job_id)`` for jobs named ``task`` on ``queue_name`` (and each of
    ``extra_tasks`` likewise).

    The handler must end the job's record itself. The endings it cannot see are recorded here through
    ``endings``: its deadline of ``timeout_seconds`` (``failed``, code ``timeout``; arq's own timeout is set
    a minute later so ours fires first); a cancellation after a user's cancel request (``cancelled``); a
    cancellation by worker shutdown on the last allowed try (``failed``, code ``worker_lost``). An earlier
    shutdown leaves the record ``running`` for arq's retry to take over.
    The health key ``<queue_name>:health-check`` is refreshed every ``settings.health_check_interval``
    seconds and expires one second after that. ``on_shutdown`` runs once the worker has stopped (close
    connections there). On SIGTERM, running jobs get ``settings.shutdown_grace`` seconds to finish when
    ``finish_jobs_on_shutdown``; otherwise they are cancelled at once (and retried later). ``background``
    runs as a task beside the worker from start-up to shutdown (the trainer's reaper).
    """
    tasks: list[asyncio.Task[None]] = []

    async def startup(ctx: dict[str, object]) -> None:  # arq passes its ctx by keyword
        if background is not None:
            tasks.append(asyncio.create_task(background()))

    async def shutdown(ctx: dict[str, object]) -> None:
        for running in tasks:
            running.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if on_shutdown is not None:
            await on_shutdown()

    functions: Sequence[Function] = [
        _function(QueueTask(task, handler, endings, timeout_seconds), settings),
        *(_function(extra, settings) for extra in extra_tasks),
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
        job_completion_wait=int(settings.shutdown_grace) if finish_jobs_on_shutdown else 0,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        on_startup=startup,
        on_shutdown=shutdown,
    )


def _function(task: QueueTask, settings: WorkerSettings) -> Function:
    """The arq function for ``task``, recording the endings its handler cannot see (see ``build_worker``)."""
    timeout_seconds, endings = task.timeout_seconds, task.endings

    async def run(ctx: dict[str, object], job_id: str) -> None:
        job_try = ctx.get("job_try")
        try:
            async with asyncio.timeout(timeout_seconds):
                await task.handler(job_id)
        except TimeoutError:
            message = f"the job ran longer than its timeout of {timeout_seconds} s; raise the worker's timeout"
            await endings.mark_failed(job_id, JobError(code="timeout", message=message))
        except asyncio.CancelledError:
            if await asyncio.shield(endings.finish_cancel(job_id)):
                raise
            if not isinstance(job_try, int) or job_try >= settings.max_tries:
                message = f"the worker stopped during the job on each of {settings.max_tries} tries; submit it again"
                await asyncio.shield(endings.mark_failed(job_id, JobError(code="worker_lost", message=message)))
            raise

    return func(run, name=task.name, timeout=timeout_seconds + 60, max_tries=settings.max_tries, keep_result=3600)


def read_health(redis_url: str, queue_name: str, timeout: float = 5.0) -> str | None:
    """What a worker on ``queue_name`` last wrote to arq's health key ``<queue_name>:health-check`` (its time,
    job counts and queue length), or None when no worker refreshed the key within its interval: the key
    expires one second after ``WORKER__HEALTH_CHECK_INTERVAL``. Every worker on the queue writes the same key,
    so this says that the queue has a live worker, not which one. ``timeout`` is seconds per Redis call.

    Raises:
        redis.RedisError: Redis did not answer.
    """
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        value = client.get(queue_name + HEALTH_CHECK_SUFFIX)
    finally:
        client.close()
    return value.decode() if isinstance(value, bytes) else None


def check_health(redis_url: str, queue_name: str) -> int:
    """The workers' ``--check`` probe, like ``arq --check``: prints the health value and returns 0 when a
    worker on ``queue_name`` refreshed its health key in time; prints why not to stderr and returns 1 when
    none did or Redis did not answer."""
    try:
        health = read_health(redis_url, queue_name)
    except redis.RedisError as exc:
        print(f"unhealthy: redis did not answer: {exc}", file=sys.stderr)
        return 1
    if health is None:
        print(f"unhealthy: no live worker on queue {queue_name} (health key missing or expired)", file=sys.stderr)
        return 1
    print(f"healthy: {queue_name}: {health}")
    return 0


def worker_main(
    prog: str,
    create: Callable[[WorkerServiceSettings], Worker],
    queue_of: Callable[[WorkerServiceSettings], str],
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of a worker service (``python -m <prog>``): read settings from the environment, log
    JSON to stdout and run until SIGINT/SIGTERM; ``--check`` is the liveness probe instead (exit 0 when a
    worker on the queue refreshed arq's health key in time, else 1)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=f"Run the {prog} worker.")
    parser.add_argument(
        "--check", action="store_true", help="check arq's health key for the worker's queue and exit (0: healthy)"
    )
    check = parser.parse_args(argv).check is True
    try:
        settings = from_env(WorkerServiceSettings, os.environ)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if check:
        return check_health(settings.redis.url, queue_of(settings))
    configure_logging(settings.app.log_level)
    try:
        create(settings).run()
    except (redis.exceptions.ConnectionError, ConnectionError) as exc:
        # arq has already retried the connection a few times; a traceback would add nothing but noise.
        print(
            f"{prog}: cannot reach Redis at {_redis_address(settings.redis.url)} (REDIS__URL): {exc}", file=sys.stderr
        )
        return 1
    return 0


def _redis_address(url: str) -> str:
    """``host:port/db`` of a Redis URL, without its credentials."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"
