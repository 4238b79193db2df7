"""The trainer worker's arq wiring: training runs and evaluations, each run by the one job runner
(``mt_storage.runner``) with its ``Work`` (``mt_trainer_worker.work``), and their reapers."""

from __future__ import annotations

import asyncio

from arq.worker import Worker
from redis.asyncio import Redis

from mt_contracts.evaluation import Evaluated
from mt_contracts.jobs import EvalJob, RunJob
from mt_contracts.queue import EVALUATE_MODEL_TASK, JOIN_RUN_TASK, TRAIN_MODEL_TASK
from mt_contracts.settings import WorkerServiceSettings
from mt_contracts.training import Finished
from mt_storage.corpora import corpus_name_of
from mt_storage.events import LivePublisher
from mt_storage.jobs import eval_jobs, run_jobs
from mt_storage.layout import Layout
from mt_storage.lifecycle import Lifecycle
from mt_storage.process import WarmChild
from mt_storage.queue import JobQueue, QueueTask, build_worker
from mt_storage.runner import JobRunner, check_timing
from mt_storage.store import Mirror, open_store
from mt_trainer_worker.launchers import LaunchContext
from mt_trainer_worker.launchers.torchrun import join_run
from mt_trainer_worker.reaper import eval_reaper, run_reaper
from mt_trainer_worker.work import EvalWork, RunWork, run_folders


def create_worker(settings: WorkerServiceSettings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    """The arq worker for ``settings.queue.training`` (training runs and evaluations); one job at a time
    unless ``WORKER__MAX_JOBS`` says otherwise.

    Raises:
        SettingsError: the stall limit is too short for the heartbeat interval.
    """
    check_timing(settings.app.stall_after_seconds, settings.worker.heartbeat_interval)
    redis = Redis.from_url(settings.redis.dsn)
    layout = Layout.from_settings(settings.app)
    # With an object store: what a run reads is pulled before it starts (RunWork.prepare), its checkpoints
    # are uploaded as they are written (RunWork.keep) and its folders before any ending (RunWork.settle);
    # nothing without one.
    mirror = Mirror(open_store(settings.storage), layout, settings.storage.cache_max_bytes)
    stall_after = settings.app.stall_after_seconds
    runs = Lifecycle(run_jobs(redis), "run", stall_after)
    evals = Lifecycle(eval_jobs(redis), "evaluation", stall_after)
    publisher = LivePublisher(redis)
    queues: list[JobQueue] = []
    # One standby child serves both kinds: runs and evaluations import the same libraries.
    warm = (
        WarmChild((RunWork.module, EvalWork.module), settings.worker.niceness) if settings.worker.warm_child else None
    )

    def queue() -> JobQueue | None:
        return queues[0] if queues else None

    launch = LaunchContext(
        settings=settings.launcher,
        niceness=settings.worker.niceness,
        layout=layout,
        training_queue=settings.queue.training,
        redis=redis,
        queue=queue,
    )
    run_runner: JobRunner[RunJob, Finished] = JobRunner(
        runs,
        RunWork(layout, settings.worker, mirror if mirror.enabled else None, launch),
        settings.worker,
        queue=queue,
        publisher=publisher,
        roots=layout.roots(),
        timeout_seconds=settings.worker.training_job_timeout,
        warm=warm,
    )
    eval_runner: JobRunner[EvalJob, Evaluated] = JobRunner(
        evals,
        EvalWork(layout, runs.store, mirror if mirror.enabled else None),
        settings.worker,
        queue=queue,
        publisher=publisher,
        roots=layout.roots(),
        timeout_seconds=settings.worker.eval_job_timeout,
        warm=warm,
    )

    async def train(run_id: str, job_try: int) -> None:
        job = await runs.store.get(run_id) if mirror.enabled else None
        # The run's folders stay in the cache while it runs (STORAGE__CACHE_MAX_BYTES).
        with mirror.hold(run_folders(layout, job) if job is not None else []):
            await run_runner.run(run_id, job_try)
        if mirror.enabled:
            await asyncio.to_thread(mirror.trim)

    async def evaluate(eval_id: str, job_try: int) -> None:
        job = await evals.store.get(eval_id) if mirror.enabled else None
        run = await runs.store.get(job.run_id) if job is not None else None
        held = run_folders(layout, run) if run is not None else []
        if job is not None and job.request.corpus_path is not None:
            held.append(layout.corpus_root / corpus_name_of(job.request.corpus_path))
        with mirror.hold(held):
            await eval_runner.run(eval_id, job_try)
        if mirror.enabled:
            await asyncio.to_thread(mirror.trim)

    async def join(join_id: str, job_try: int) -> None:
        # Another worker's torchrun run on several nodes: this worker is one of its other nodes.
        await join_run(join_id, launch, settings.worker.shutdown_grace)

    async def shutdown() -> None:
        await publisher.aclose()
        await redis.aclose()

    async def reapers(job_queue: JobQueue) -> None:
        queues.append(job_queue)
        await asyncio.gather(
            run_reaper(runs, job_queue, layout, settings, mirror).run_forever(),
            eval_reaper(evals, job_queue, settings).run_forever(),
        )

    return build_worker(
        tasks=[
            QueueTask(TRAIN_MODEL_TASK, train, settings.worker.training_job_timeout),
            QueueTask(EVALUATE_MODEL_TASK, evaluate, settings.worker.eval_job_timeout),
            QueueTask(JOIN_RUN_TASK, join, settings.worker.training_job_timeout),
        ],
        queue_name=settings.queue.training,
        redis_url=settings.redis.dsn,
        settings=settings.worker,
        burst=burst,
        handle_signals=handle_signals,
        on_shutdown=shutdown,
        # A run can take hours: stop it at once (the runner gives the child its own grace period to
        # checkpoint and exit) and hand it back, rather than wait for it to finish.
        finish_jobs_on_shutdown=False,
        background=reapers,
        warm=warm,
    )
