"""What the handlers need, built once per app: settings, layout, job stores, live events, metrics, the
queue and the inference processes."""

from __future__ import annotations

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
from mt_storage.lifecycle import Lifecycle
from mt_storage.queue import HEALTH_CHECK_SUFFIX, JobQueue


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
        stall_after = settings.app.stall_after_seconds
        self.tokenizer_lifecycle = Lifecycle(self.tokenizers, "tokenizer", stall_after)
        self.run_lifecycle = Lifecycle(self.runs, "run", stall_after)
        self.eval_lifecycle = Lifecycle(self.evals, "evaluation", stall_after)
        self.tokenizer_cache = TokenizerCache()
        self.digests = DigestCache()
        self.inference = InferencePool(settings.inference)

    async def readiness(self) -> list[str]:
        """Reasons the service is not ready; empty when Redis answers and each worker kind has a fresh
        health key (arq refreshes it every ``WORKER__HEALTH_CHECK_INTERVAL`` seconds)."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            return [f"redis unreachable: {exc}"]
        reasons = []
        for kind, queue_name in (
            ("tokenizer", self.settings.queue.tokenizer),
            ("trainer", self.settings.queue.training),
        ):
            if not await self.redis.exists(queue_name + HEALTH_CHECK_SUFFIX):
                reasons.append(f"no live {kind} worker on queue {queue_name}")
        return reasons
