"""The trainer worker's arq wiring: thin tasks that hand a run to the ``RunSupervisor`` and an evaluation to
the ``EvalSupervisor``."""

from __future__ import annotations

import asyncio

from arq.worker import Worker
from redis.asyncio import Redis

from mt_contracts.queue import EVALUATE_MODEL_TASK, TRAIN_MODEL_TASK
from mt_contracts.settings import WorkerServiceSettings
from mt_storage.events import LivePublisher
from mt_storage.jobs import eval_jobs, run_jobs
from mt_storage.layout import Layout
from mt_storage.queue import ArqJobQueue, QueueTask, build_worker
from mt_storage.store import Mirror, open_store
from mt_trainer_worker.evaluator import EvalSupervisor
from mt_trainer_worker.reaper import eval_reaper, run_reaper
from mt_trainer_worker.supervisor import RunSupervisor


def create_worker(settings: WorkerServiceSettings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    """The arq worker for ``settings.queue.training`` (training runs and evaluations); one job at a time
    unless ``WORKER__MAX_JOBS`` says otherwise."""
    redis = Redis.from_url(settings.redis.dsn)
    store = run_jobs(redis)
    layout = Layout.from_settings(settings.app)
    publisher = LivePublisher(redis)
    # With an object store: pull what a run reads before it starts, push checkpoints as they are written,
    # the run's folders before it is recorded succeeded and whatever is left when it ends (Mirror.around_run);
    # nothing without one.
    mirror = Mirror(open_store(settings.storage), layout)

    async def upload(run_id: str) -> None:
        await asyncio.to_thread(mirror.push_run, run_id)

    supervisor = RunSupervisor(store, layout, settings.worker, publisher, before_succeed=upload)
    evals = eval_jobs(redis)
    evaluator = EvalSupervisor(evals, store, layout, settings.worker)
    poll = settings.worker.heartbeat_interval

    async def train(run_id: str) -> None:
        job = await store.get(run_id) if mirror.enabled else None
        tokenizer_id = job.request.tokenizer_id if job is not None else None
        await mirror.around_run(run_id, tokenizer_id, lambda: supervisor.run(run_id), poll)

    async def evaluate(eval_id: str) -> None:
        job = await evals.get(eval_id) if mirror.enabled else None
        run = await store.get(job.run_id) if job is not None else None
        if job is None or run is None:
            await evaluator.run(eval_id)
            return
        await mirror.around_run(run.id, run.request.tokenizer_id, lambda: evaluator.run(eval_id), poll)

    async def shutdown() -> None:
        await publisher.aclose()
        await redis.aclose()

    async def reapers() -> None:
        queue = await ArqJobQueue.connect(settings.redis.dsn)
        try:
            await asyncio.gather(
                run_reaper(store, queue, layout, settings, mirror).run_forever(),
                eval_reaper(evals, queue, settings).run_forever(),
            )
        finally:
            await queue.close()

    return build_worker(
        task=TRAIN_MODEL_TASK,
        handler=train,
        endings=store,
        queue_name=settings.queue.training,
        redis_url=settings.redis.dsn,
        settings=settings.worker,
        timeout_seconds=settings.worker.training_job_timeout,
        burst=burst,
        handle_signals=handle_signals,
        on_shutdown=shutdown,
        # A run can take hours: stop it at once (the supervisor gives the process its own grace period to
        # exit cleanly) and let the retry take it over, rather than wait for it to finish.
        finish_jobs_on_shutdown=False,
        background=reapers,
        extra_tasks=[QueueTask(EVALUATE_MODEL_TASK, evaluate, evals, settings.worker.eval_job_timeout)],
    )
