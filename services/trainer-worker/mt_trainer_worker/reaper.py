"""What the trainer worker's reapers (``mt_storage.reaper``) may do with stalled runs and evaluations.

A stalled run goes back on the queue when it has a checkpoint and attempts left (any trainer worker
resumes it from the checkpoint); otherwise it fails with ``worker_lost``. A stalled evaluation runs again
while it has attempts left (it is read-only and starts over).
"""

from __future__ import annotations

from mt_contracts.jobs import EvalJob, RunJob
from mt_contracts.queue import EVALUATE_MODEL_TASK, TRAIN_MODEL_TASK
from mt_contracts.settings import WorkerServiceSettings
from mt_storage.checkpoints import read_index
from mt_storage.layout import Layout
from mt_storage.lifecycle import Lifecycle
from mt_storage.queue import JobQueue
from mt_storage.reaper import Reaper, attempts_left
from mt_storage.store import Mirror


def run_reaper(
    lifecycle: Lifecycle[RunJob],
    queue: JobQueue,
    layout: Layout,
    settings: WorkerServiceSettings,
    mirror: Mirror | None = None,
) -> Reaper[RunJob]:
    """The reaper of training runs; with an object store (``mirror``) a checkpoint counts when the store
    has one, since the pod that wrote it is gone."""
    attempts = attempts_left(settings.worker.max_tries)

    def has_checkpoint(run_id: str) -> bool:
        if mirror is not None and mirror.enabled:
            return mirror.has_checkpoint(layout.run_dir(run_id))
        return bool(read_index(layout.run_dir(run_id)))

    def cannot_retry(job: RunJob) -> str | None:
        return "it has no checkpoint" if not has_checkpoint(job.id) else attempts(job)

    return Reaper(
        lifecycle,
        queue,
        settings.queue.training,
        task=TRAIN_MODEL_TASK,
        cannot_retry=cannot_retry,
        advice=lambda run_id: f"POST /runs/{run_id}/resume to continue from a checkpoint, or submit it again",
    )


def eval_reaper(lifecycle: Lifecycle[EvalJob], queue: JobQueue, settings: WorkerServiceSettings) -> Reaper[EvalJob]:
    """The reaper of evaluations."""
    return Reaper(
        lifecycle,
        queue,
        settings.queue.training,
        task=EVALUATE_MODEL_TASK,
        cannot_retry=attempts_left(settings.worker.max_tries),
        advice=lambda eval_id: "submit the evaluation again",
    )
