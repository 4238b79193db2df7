"""What the handlers need, built once per app: settings, layout, job stores, live events, metrics, the
queue and the inference processes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mt_api import Unavailable
from mt_api.artifacts import DigestCache
from mt_api.estimates import estimate_run, estimate_tokenizer
from mt_api.inference_pool import InferencePool
from mt_api.live import EventHub
from mt_api.metrics import Metrics
from mt_api.tokenizer_cache import TokenizerCache
from mt_contracts.corpora import RunEstimate, TokenizerEstimate
from mt_contracts.jobs import EvalJob, RunJob, TokenizerJob
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.settings import ApiSettings
from mt_storage.checkpoints import INDEX, MODEL_CONFIG, read_index
from mt_storage.corpora import Corpora, CorpusGuard
from mt_storage.events import JobEvents
from mt_storage.jobs import JobStore, eval_jobs, run_jobs, tokenizer_jobs
from mt_storage.layout import Layout
from mt_storage.lifecycle import Lifecycle
from mt_storage.marker import check_storage
from mt_storage.queue import JobQueue, live_workers
from mt_storage.store import Mirror, open_store
from mt_storage.webhooks import WebhookStore

logger = logging.getLogger(__name__)


# An estimate's calibration runs: the succeeded among the newest this many runs, read at most this often.
RECENT_RUNS_SCANNED = 2000
RECENT_RUNS_SECONDS = 10.0


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
        # With an object store, the artifacts root is this API's cache of it (STORAGE__BACKEND=s3).
        self.mirror = Mirror(open_store(settings.storage), self.layout, settings.storage.cache_max_bytes)
        self.tokenizers: JobStore[TokenizerJob] = tokenizer_jobs(redis)
        self.runs: JobStore[RunJob] = run_jobs(redis)
        self.evals: JobStore[EvalJob] = eval_jobs(redis)
        stall_after = settings.app.stall_after_seconds
        self.tokenizer_lifecycle = Lifecycle(self.tokenizers, "tokenizer", stall_after)
        self.run_lifecycle = Lifecycle(self.runs, "run", stall_after)
        self.eval_lifecycle = Lifecycle(self.evals, "evaluation", stall_after)
        self.webhooks = WebhookStore(redis)
        self.tokenizer_cache = TokenizerCache()
        self.digests = DigestCache()
        self.inference = InferencePool(settings.inference)
        self.corpus_guard = CorpusGuard(redis, self.tokenizers, self.runs, self.evals)
        # Uploaded corpora: the corpus root, or with an object store the bucket (the root is a cache of it).
        self.corpora = Corpora(self.layout.corpus_root, self.mirror)
        self._recent_runs: tuple[float, list[RunJob]] | None = None
        self._recent_runs_lock = asyncio.Lock()

    async def readiness(self) -> list[str]:
        """Reasons the gateway cannot serve; empty when Redis answers and the artifact storage is the one the
        workers write (``mt_storage.marker``). Worker pools are not part of it: a stopped pool delays new
        jobs, but downloads, reads and streams still work (``worker_pools`` reports them)."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            return [f"redis unreachable: {exc}"]
        if self.mirror.store is not None:
            reasons = [await asyncio.to_thread(self.mirror.store.check)]
            reasons.append(await check_storage(self.redis, self.layout.artifacts_root, shared=False))
            return [reason for reason in reasons if reason]
        reason = await check_storage(self.redis, self.layout.artifacts_root)
        return [reason] if reason else []

    async def pull(self, directory: Path, *, committed: bool = True) -> bool:
        """Bring ``directory`` from the object store into this API's cache (``Mirror.pull``); a no-op
        without one. Returns whether the folder is there."""
        if not self.mirror.enabled:
            return True
        return await asyncio.to_thread(self.mirror.pull, directory, committed=committed)

    async def pull_file(self, path: Path) -> None:
        """Refresh one file (a log, an index) from the object store, when there is one."""
        if self.mirror.enabled:
            await asyncio.to_thread(self.mirror.pull_file, path)

    async def push(self, directory: Path) -> None:
        """Upload a folder this API wrote (an export) to the object store, manifest last."""
        if self.mirror.enabled:
            await asyncio.to_thread(self.mirror.push, directory)

    async def fetch_weights_index(self, run_id: str, checkpoint: int | None) -> None:
        """Bring what ``resolve_weights`` checks for run ``run_id`` into the cache, for a request that only
        names weights a worker will read (an evaluation): the checkpoint index and the run's model config, or
        the finished model folder whole (a local ``manifest.json`` marks a complete folder, so it never comes
        alone)."""
        if not self.mirror.enabled:
            return
        if checkpoint is None:
            await self.pull(self.layout.model_dir(run_id))
            return
        await self.pull_file(self.layout.run_dir(run_id) / INDEX)
        await self.pull_file(self.layout.run_dir(run_id) / MODEL_CONFIG)

    async def tokenizer_estimate(self, request: TrainTokenizerRequest, files: list[Path]) -> TokenizerEstimate:
        """The dry-run estimate of a tokenizer job on its corpus ``files`` (the request already checked:
        ``check_tokenizer_request`` resolved them)."""
        root = self.layout.corpus_root
        return await asyncio.to_thread(estimate_tokenizer, request, files, root, self.settings.estimate)

    async def run_estimate(self, request: TrainRunRequest, files: list[Path], *, strict: bool) -> RunEstimate | None:
        """The dry-run estimate of a run on its corpus ``files`` (the request already checked:
        ``check_run_request`` resolved them, and its tokenizer succeeded). With
        ``strict`` an unreadable tokenizer raises ``Unavailable``; else it gives ``None`` (a real run is never
        refused for its estimate).

        Raises:
            Unavailable: ``strict``, and the tokenizer's files are not in this API's storage.
        """
        tokenizer_dir = self.layout.tokenizer_dir(request.tokenizer_id)
        await self.pull(tokenizer_dir)
        root = self.layout.corpus_root
        # A dry run reads them afresh (a run that just succeeded counts); a submission may use a read up to
        # RECENT_RUNS_SECONDS old, as its estimate is only recorded.
        recent = await self.recent_succeeded_runs(fresh=strict)
        try:
            return await asyncio.to_thread(
                estimate_run,
                request,
                files=files,
                corpus_root=root,
                tokenizer_file=tokenizer_dir / "tokenizer.json",
                dataset_cache=self.layout.dataset_cache(),
                recent=recent,
                settings=self.settings.estimate,
                fetch=self.mirror.pull_file,
            )
        except OSError as exc:
            if strict:
                raise Unavailable(f"the run cannot be estimated: {exc}; see /readyz") from exc
            logger.warning("no estimate", extra={"event": "estimate_failed", "error": str(exc)})
            return None

    async def recent_succeeded_runs(self, *, fresh: bool = False) -> list[RunJob]:
        """Up to 100 succeeded runs among the newest ``RECENT_RUNS_SCANNED`` (what estimates calibrate
        against). Unless ``fresh``, a read at most ``RECENT_RUNS_SECONDS`` old is reused: finding them scans
        the run index, and a submission must not cost a scan of every run ever queued."""
        cached = self._recent_runs
        if not fresh and cached is not None and time.monotonic() - cached[0] < RECENT_RUNS_SECONDS:
            return cached[1]
        async with self._recent_runs_lock:  # concurrent submissions share one read
            cached = self._recent_runs
            if fresh or cached is None or time.monotonic() - cached[0] >= RECENT_RUNS_SECONDS:
                runs, _ = await self.runs.list_page(limit=100, status="succeeded", max_scanned=RECENT_RUNS_SCANNED)
                cached = (time.monotonic(), runs)
                self._recent_runs = cached
            return cached[1]

    async def fetch_corpus(self, corpus_path: str | None) -> None:
        """Before a request's ``corpus_path`` is checked or estimated: with an object store, the uploaded
        corpus it names in this API's cache (another API pod may have uploaded, replaced or deleted it)."""
        if corpus_path is not None and self.corpora.shared:
            await asyncio.to_thread(self.corpora.fetch, corpus_path)

    async def fetch_weights(self, run_id: str, tokenizer_id: str, checkpoint: int | None) -> None:
        """Bring what ``resolve_weights`` and the inference processes read for run ``run_id`` into the cache:
        the finished model folder, or the checkpoint index, model config, tokenizer and the checkpoint."""
        if not self.mirror.enabled:
            return
        if checkpoint is None:
            await self.pull(self.layout.model_dir(run_id))
            return
        run_dir = self.layout.run_dir(run_id)
        await self.pull_file(run_dir / INDEX)
        await self.pull_file(run_dir / MODEL_CONFIG)
        await self.pull(self.layout.tokenizer_dir(tokenizer_id))
        for entry in await asyncio.to_thread(read_index, run_dir):
            if entry.step == checkpoint:
                await self.pull_file(run_dir / entry.path)

    async def worker_pools(self) -> dict[str, WorkerPool]:
        """Each worker kind's queue and how many of its workers (hosts) have a fresh health key."""
        queues = self.settings.queue
        pools = {"tokenizer": queues.tokenizer, "trainer": queues.training, "webhook": queues.webhooks}
        return {
            kind: WorkerPool(queue=queue, live=await live_workers(self.redis, queue)) for kind, queue in pools.items()
        }


class WorkerPool(msgspec.Struct, frozen=True):
    """A worker kind's queue and its live workers (one per pod or container whose health key is fresh)."""

    queue: str
    live: int
