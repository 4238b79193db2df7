"""The tokenizer worker: what a tokenizer job runs (``TokenizerWork``, for the one job runner of
``mt_storage.runner``), its arq wiring, and the reaper of tokenizer jobs whose worker died (requeued while
they have attempts left: training starts over and, being deterministic, writes the same artifacts)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec
from arq.worker import Worker
from redis.asyncio import Redis

from mt_contracts.events import ChildEvent, Resumed
from mt_contracts.jobs import TokenizerJob, TokenizerResult
from mt_contracts.queue import TRAIN_TOKENIZER_TASK
from mt_contracts.settings import WorkerServiceSettings
from mt_contracts.tokenizer_process import (
    TokenizerMessage,
    TokenizerSpec,
    TokenizerTrained,
    decode_tokenizer_message,
)
from mt_storage.corpora import corpus_name_of
from mt_storage.events import LivePublisher
from mt_storage.files import atomic_write_bytes
from mt_storage.joblog import JobLog
from mt_storage.jobs import tokenizer_jobs
from mt_storage.layout import MANIFEST, Layout
from mt_storage.lifecycle import Change, Lifecycle
from mt_storage.process import WarmChild
from mt_storage.queue import JobQueue, QueueTask, build_worker
from mt_storage.reaper import Reaper, attempts_left
from mt_storage.runner import JobRunner, Prepared, check_timing
from mt_storage.store import Fence, Mirror, fenced, open_store

logger = logging.getLogger(__name__)


class TokenizerWork:
    """Tokenizer training: ``mt_tokenizer_worker.process`` on a ``TokenizerSpec``; never restarted within an
    attempt (it starts over on the next one)."""

    module = "mt_tokenizer_worker.process"
    out_of_memory_hint = "lower input_sentence_size or train on a smaller corpus"

    def __init__(self, layout: Layout, mirror: Mirror | None = None) -> None:
        self.layout = layout
        self.mirror = mirror

    def logs_path(self, job: TokenizerJob) -> Path:
        return self.layout.tokenizer_logs(job.id)

    async def prepare(self, job: TokenizerJob) -> Prepared:
        if self.mirror is not None:  # an uploaded corpus comes from the object store
            await asyncio.to_thread(self.mirror.pull_corpus, job.request.corpus_path)
        spec = TokenizerSpec(
            tokenizer_id=job.id,
            request=job.request,
            corpus_root=str(self.layout.corpus_root),
            out_dir=str(self.layout.tokenizer_dir(job.id)),
            estimate=job.estimate,
        )
        return Prepared(msgspec.json.encode(spec), self.layout.tokenizer_process_log(job.id))

    def decode(self, line: bytes) -> TokenizerMessage:
        return decode_tokenizer_message(line)

    def record_change(self, message: ChildEvent | Resumed) -> tuple[str, Change[TokenizerJob]] | None:
        return None

    def restart_marker(self, job: TokenizerJob) -> int:
        return 0

    async def commit(self, job: TokenizerJob, outcome: TokenizerTrained, log: JobLog) -> Change[TokenizerJob]:
        out_dir = self.layout.tokenizer_dir(job.id)
        atomic_write_bytes(out_dir / MANIFEST, bytes(outcome.manifest))
        result = TokenizerResult(
            vocab_size=outcome.vocab_size,
            special_tokens=outcome.special_tokens,
            corpus_bytes=outcome.statistics.corpus.bytes,
            training_seconds=outcome.statistics.training_seconds,
            artifact_dir=str(out_dir),
            method=job.request.method,
            statistics=outcome.statistics,
        )
        log.write("info", "trained", f"vocab_size={outcome.vocab_size}", artifact_dir=str(out_dir))
        return lambda record: msgspec.structs.replace(record, result=result)

    async def keep(self, job: TokenizerJob, fence: Fence) -> None:
        """Nothing to upload while a tokenizer trains."""

    async def settle(self, job: TokenizerJob, fence: Fence) -> None:
        """With an object store: the tokenizer's folder (manifest last, once committed) and its log, uploaded
        before any ending is recorded, so whoever sees the status can read them."""
        if self.mirror is not None:
            mirror, out_dir = self.mirror, self.layout.tokenizer_dir(job.id)
            await fenced(lambda check: mirror.push(out_dir, check=check), fence)


def create_worker(settings: WorkerServiceSettings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    """The arq worker for ``settings.queue.tokenizer``.

    Raises:
        SettingsError: the stall limit is too short for the heartbeat interval.
    """
    check_timing(settings.app.stall_after_seconds, settings.worker.heartbeat_interval)
    layout = Layout.from_settings(settings.app)
    redis = Redis.from_url(settings.redis.dsn)
    lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", settings.app.stall_after_seconds)
    publisher = LivePublisher(redis)
    mirror = Mirror(open_store(settings.storage), layout, settings.storage.cache_max_bytes)
    queues: list[JobQueue] = []
    warm = WarmChild((TokenizerWork.module,), settings.worker.niceness) if settings.worker.warm_child else None
    runner: JobRunner[TokenizerJob, TokenizerTrained] = JobRunner(
        lifecycle,
        TokenizerWork(layout, mirror if mirror.enabled else None),
        settings.worker,
        queue=lambda: queues[0] if queues else None,
        publisher=publisher,
        roots=layout.roots(),
        timeout_seconds=settings.worker.tokenizer_job_timeout,
        warm=warm,
    )

    async def handle(tokenizer_id: str, job_try: int) -> None:
        job = await lifecycle.store.get(tokenizer_id) if mirror.enabled else None
        held = [layout.tokenizer_dir(tokenizer_id)]
        if job is not None:
            held.append(layout.corpus_root / corpus_name_of(job.request.corpus_path))
        with mirror.hold(held):  # the job's folders stay in the cache while it runs
            await runner.run(tokenizer_id, job_try)
        if mirror.enabled:
            await asyncio.to_thread(mirror.trim)

    async def shutdown() -> None:
        await publisher.aclose()
        await redis.aclose()

    async def reaper(queue: JobQueue) -> None:
        queues.append(queue)
        await Reaper(
            lifecycle,
            queue,
            settings.queue.tokenizer,
            task=TRAIN_TOKENIZER_TASK,
            cannot_retry=attempts_left(settings.worker.max_tries),
            advice=lambda tokenizer_id: "submit the tokenizer job again",
        ).run_forever()

    return build_worker(
        tasks=[QueueTask(TRAIN_TOKENIZER_TASK, handle, settings.worker.tokenizer_job_timeout)],
        queue_name=settings.queue.tokenizer,
        redis_url=settings.redis.dsn,
        settings=settings.worker,
        burst=burst,
        handle_signals=handle_signals,
        on_shutdown=shutdown,
        background=reaper,
        warm=warm,
    )
