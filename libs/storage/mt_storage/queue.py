"""The job queue: arq on Redis behind a small Protocol, and the one place arq's loose typing is touched.

Job semantics are declared here, not left to arq's defaults (300 s timeout, 5 tries, hourly health check,
0.5 s polling): every job's arq id is our job id, so enqueueing twice is a no-op; timeouts, tries and
abort are explicit; jobs travel as MessagePack.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
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
from redis.asyncio import Redis as AsyncRedis

from mt_contracts.logs import configure_logging
from mt_contracts.queue import deserialize_job, serialize_job
from mt_contracts.settings import SettingsError, WorkerServiceSettings, WorkerSettings, from_env
from mt_storage.events import REDIS_DOWN
from mt_storage.layout import Layout
from mt_storage.marker import check_storage
from mt_storage.process import WarmChild
from mt_storage.store import open_store

HEALTH_CHECK_SUFFIX = ":health-check"
logger = logging.getLogger(__name__)


def health_key(queue_name: str, host: str | None = None) -> str:
    """The health key of the workers of ``queue_name`` on ``host`` (this machine's hostname by default):
    ``<queue>:health-check:<host>``. A pod or container has its own hostname, so its liveness probe reads
    its own worker's key, never one another pod keeps fresh."""
    return f"{queue_name}{HEALTH_CHECK_SUFFIX}:{host or socket.gethostname()}"


async def live_workers(client: AsyncRedis, queue_name: str) -> int:
    """How many hosts (pods, containers) run a worker on ``queue_name`` whose health key is fresh."""
    count = 0
    async for _ in client.scan_iter(match=f"{queue_name}{HEALTH_CHECK_SUFFIX}:*", count=1000):
        count += 1
    return count


class JobQueue(Protocol):
    """Puts a job on a named queue (``job_id`` is our id; enqueueing an id already queued does nothing) and
    asks the worker running a job to stop it."""

    async def enqueue(self, task: str, job_id: str, queue_name: str, defer_seconds: float = 0.0) -> bool: ...

    async def abort(self, job_id: str) -> None: ...

    async def requeue(self, task: str, job_id: str, queue_name: str) -> bool: ...

    async def release(self, job_id: str) -> None: ...

    async def discard(self, job_id: str, queue_name: str) -> None: ...

    async def exists(self, job_id: str) -> bool: ...


# How long a queued job stays runnable in arq (its job key's lifetime): longer than any job waits or runs,
# so a run handed back after days still has a job to run it (arq's default is one day).
JOB_EXPIRES = timedelta(days=30)


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

    async def enqueue(self, task: str, job_id: str, queue_name: str, defer_seconds: float = 0.0) -> bool:
        """Returns False when a job with this id is already queued, running or has a result. A job with
        ``defer_seconds`` runs no sooner than that many seconds from now."""
        defer = timedelta(seconds=defer_seconds) if defer_seconds > 0 else None
        job = await self.pool.enqueue_job(
            task, job_id, _job_id=job_id, _queue_name=queue_name, _expires=JOB_EXPIRES, _defer_by=defer
        )
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

    async def exists(self, job_id: str) -> bool:
        """True when arq holds a job of this id that will run (queued, or in progress on a worker)."""
        return bool(await self.pool.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id))

    async def close(self) -> None:
        await self.pool.aclose()


# Runs one arq job: ``handler(job_id, job_try)``; it records every ending of the job itself (the runner).
JobHandler = Callable[[str, int], Awaitable[None]]
# Runs beside the worker from start-up to shutdown (the reapers), on the worker's own queue connection.
Background = Callable[[JobQueue], Coroutine[object, object, None]]
# Waits between poll iterations while Redis is unreachable (seconds): doubling up to the last.
OUTAGE_FIRST_SECONDS = 0.5
OUTAGE_MAX_SECONDS = 5.0
_REDIS_DOWN = REDIS_DOWN


class QueueTask(msgspec.Struct, frozen=True):
    """A task a worker runs: ``handler`` for jobs named ``name``; arq's own timeout is ``timeout_seconds``
    plus a minute, so the handler's deadline (the runner's) fires first."""

    name: str
    handler: JobHandler
    timeout_seconds: int


class _ResilientWorker(Worker):
    """arq's worker, riding out Redis outages: arq ends its poll loop on the first connection error (in its
    abort check or health beat) and the worker process with it. Here a poll iteration that cannot reach Redis
    is logged once and tried again with a doubling wait, and the running jobs go on meanwhile; redis-py
    reconnects by itself once the server is back."""

    _outage_wait = 0.0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except _REDIS_DOWN as exc:
            if not self._outage_wait:
                logger.warning(
                    "redis unreachable; the worker keeps its jobs running and waits",
                    extra={"event": "redis_unreachable", "queue": self.queue_name, "error": str(exc)},
                )
            self._outage_wait = min(OUTAGE_MAX_SECONDS, max(OUTAGE_FIRST_SECONDS, self._outage_wait * 2))
            await asyncio.sleep(self._outage_wait)
            return
        if self._outage_wait:
            logger.warning("redis reachable again", extra={"event": "redis_reachable", "queue": self.queue_name})
            self._outage_wait = 0.0


def build_worker(
    *,
    tasks: Sequence[QueueTask],
    queue_name: str,
    redis_url: str,
    settings: WorkerSettings,
    burst: bool = False,
    handle_signals: bool = True,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    finish_jobs_on_shutdown: bool = True,
    background: Background | None = None,
    warm: WarmChild | None = None,
) -> Worker:
    """An arq worker that runs each of ``tasks`` for its jobs on ``queue_name``; the handlers record every
    ending of their jobs themselves, given arq's try count.

    The health key ``health_key(queue_name)`` (this host's own) is refreshed every
    ``settings.health_check_interval`` seconds and expires one second after that. ``on_shutdown`` runs once
    the worker has stopped (close connections there). On SIGTERM, running jobs get ``settings.shutdown_grace``
    seconds to finish when ``finish_jobs_on_shutdown``; otherwise they are cancelled at once (and handed back).
    ``background`` runs as a task beside the worker from start-up to shutdown (the reapers), on the worker's
    own Redis pool. ``warm``, the worker's standby child, starts with the worker and is killed at shutdown.
    """
    running: list[asyncio.Task[None]] = []

    async def startup(ctx: dict[str, object]) -> None:  # arq passes its ctx by keyword
        if warm is not None:
            warm.start()
        pool = ctx.get("redis")
        if background is not None and isinstance(pool, ArqRedis):
            running.append(asyncio.create_task(background(ArqJobQueue(pool))))

    async def shutdown(ctx: dict[str, object]) -> None:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if warm is not None:
            await warm.aclose()
        if on_shutdown is not None:
            await on_shutdown()

    return _ResilientWorker(
        functions=[_function(task, settings) for task in tasks],
        queue_name=queue_name,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=burst,
        handle_signals=handle_signals,
        max_jobs=settings.max_jobs,
        poll_delay=settings.poll_delay,
        health_check_interval=settings.health_check_interval,
        health_check_key=health_key(queue_name),
        allow_abort_jobs=True,
        job_completion_wait=int(settings.shutdown_grace) if finish_jobs_on_shutdown else 0,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        on_startup=startup,
        on_shutdown=shutdown,
    )


def _function(task: QueueTask, settings: WorkerSettings) -> Function:
    """The arq function for ``task``: it hands the job id and arq's try count to the handler."""

    async def run(ctx: dict[str, object], job_id: str) -> None:
        job_try = ctx.get("job_try")
        await task.handler(job_id, job_try if isinstance(job_try, int) else 1)

    return func(run, name=task.name, timeout=task.timeout_seconds + 60, max_tries=settings.max_tries, keep_result=3600)


def read_health(redis_url: str, queue_name: str, timeout: float = 5.0) -> str | None:
    """What this host's worker on ``queue_name`` last wrote to its health key (``health_key``: its time, job
    counts and queue length), or None when it did not refresh the key within its interval: the key expires
    one second after ``WORKER__HEALTH_CHECK_INTERVAL``. Workers on other hosts (pods) have keys of their own,
    so a pod whose worker hangs is unhealthy however many others are alive. ``timeout`` is seconds per Redis
    call.

    Raises:
        redis.RedisError: Redis did not answer.
    """
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        value = client.get(health_key(queue_name))
    finally:
        client.close()
    return value.decode() if isinstance(value, bytes) else None


def check_health(redis_url: str, queue_name: str) -> int:
    """The workers' ``--check`` probe, like ``arq --check``: prints the health value and returns 0 when this
    host's worker on ``queue_name`` refreshed its own health key in time; prints why not to stderr and returns
    1 when it did not or Redis did not answer."""
    try:
        health = read_health(redis_url, queue_name)
    except redis.RedisError as exc:
        print(f"unhealthy: redis did not answer: {exc}", file=sys.stderr)
        return 1
    if health is None:
        key = health_key(queue_name)
        print(
            f"unhealthy: this host's worker on queue {queue_name} is not alive ({key} missing or expired)",
            file=sys.stderr,
        )
        return 1
    print(f"healthy: {queue_name}: {health}")
    return 0


def worker_main(
    prog: str,
    create: Callable[[WorkerServiceSettings], Worker],
    queue_of: Callable[[WorkerServiceSettings], str],
    argv: Sequence[str] | None = None,
    *,
    uses_storage: bool = True,
) -> int:
    """The command line of a worker service (``python -m <prog>``): read settings from the environment, log
    JSON to stdout and run until SIGINT/SIGTERM (exit 2 at once when it ``uses_storage`` and its artifact
    storage is not the deployment's: ``mt_storage.marker``); ``--check`` is the liveness probe instead (exit 0 when this
    host's worker refreshed its own health key in time, else 1)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=f"Run the {prog} worker.")
    parser.add_argument(
        "--check", action="store_true", help="check this host's worker's health key and exit (0: healthy)"
    )
    check = parser.parse_args(argv).check is True
    try:
        settings = from_env(WorkerServiceSettings, os.environ)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if check:
        return check_health(settings.redis.dsn, queue_of(settings))
    configure_logging(settings.app.log_level)
    try:
        reason = asyncio.run(_storage_reason(settings)) if uses_storage else None
        if reason is not None:
            print(f"{prog}: {reason}", file=sys.stderr)
            return 2
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


async def _storage_reason(settings: WorkerServiceSettings) -> str | None:
    """Why this worker does not see the deployment's artifact storage (``mt_storage.marker``; with an object
    store, the bucket and a writable cache), or None."""
    store = open_store(settings.storage)
    if store is not None and (reason := await asyncio.to_thread(store.check)):
        return reason
    client = AsyncRedis.from_url(settings.redis.dsn)
    try:
        root = Layout.from_settings(settings.app).artifacts_root
        return await check_storage(client, root, shared=store is None)
    finally:
        await client.aclose()
