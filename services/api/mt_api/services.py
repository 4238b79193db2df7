"""What the handlers need, built once per app: settings, layout, job stores, live events, metrics, the
queue and the inference processes."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mt_api.artifacts import DigestCache
from mt_api.inference_pool import InferencePool
from mt_api.live import EventHub
from mt_api.metrics import Metrics
from mt_api.tokenizer_cache import TokenizerCache
from mt_contracts.jobs import EvalJob, RunJob, TokenizerJob
from mt_contracts.settings import ApiSettings
from mt_storage.events import JobEvents
from mt_storage.jobs import JobStore, eval_jobs, run_jobs, tokenizer_jobs
from mt_storage.layout import Layout
from mt_storage.marker import check_storage
from mt_storage.queue import JobQueue, live_workers


class Services:
    """The gateway's collaborators; ``create_app`` builds one and handlers receive it by injection."""

    def __init__(self, settings: ApiSettings, redis: Redis, queue: JobQueue, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = JobEvents(redis)
        self.live = EventHub(self.events)
        self.redis = redis
        self.queue = queue
        self.layout = Layout.from_settings(settings.app)
        self.tokenizers: JobStore[TokenizerJob] = tokenizer_jobs(redis)
        self.runs: JobStore[RunJob] = run_jobs(redis)
        self.evals: JobStore[EvalJob] = eval_jobs(redis)
        self.tokenizer_cache = TokenizerCache()
        self.digests = DigestCache()
        self.inference = InferencePool(settings.inference)

    async def readiness(self) -> list[str]:
        """Reasons the gateway cannot serve; empty when Redis answers and the artifact storage is the one the
        workers write (``mt_storage.marker``). Worker pools are not part of it: a stopped pool delays new
        jobs, but downloads, reads and streams still work (``worker_pools`` reports them)."""
        try:
            await self.redis.ping()
        except (OSError, RedisError) as exc:
            return [f"redis unreachable: {exc}"]
        reason = await check_storage(self.redis, self.layout.artifacts_root)
        return [reason] if reason else []

    async def worker_pools(self) -> dict[str, WorkerPool]:
        """Each worker kind's queue and how many of its workers (hosts) have a fresh health key."""
        pools = {"tokenizer": self.settings.queue.tokenizer, "trainer": self.settings.queue.training}
        return {
            kind: WorkerPool(queue=queue, live=await live_workers(self.redis, queue)) for kind, queue in pools.items()
        }


class WorkerPool(msgspec.Struct, frozen=True):
    """A worker kind's queue and its live workers (one per pod or container whose health key is fresh)."""

    queue: str
    live: int
