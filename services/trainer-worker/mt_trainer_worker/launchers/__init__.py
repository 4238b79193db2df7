"""How a training run's processes start: launchers behind one small Protocol, chosen by the run's
``launcher`` (``local``, ``torchrun``, ``k8s-trainjob``).

A launcher turns the training module into the ``Command`` of each launch of the run's child: the one process
of ``local``, ``torchrun`` and its ranks, or a watcher of a Kubeflow Trainer ``TrainJob``. Whatever it
starts, the job runner (``mt_storage.runner``) supervises one child in one process group: rank 0's stdout
carries the typed messages, a stop is SIGTERM to the whole group, and a child that dies after a newer
checkpoint is started again, the whole group from that checkpoint (torchrun's own elastic restarts are not
used: a failed rank fails the launch). Adding a launcher is one module here and one entry in ``LAUNCHERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis

from mt_contracts.jobs import RunJob
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import LauncherSettings
from mt_storage.layout import Layout
from mt_storage.process import Command
from mt_storage.queue import JobQueue


def _no_queue() -> JobQueue | None:
    return None


@dataclass(frozen=True, kw_only=True)
class LaunchContext:
    """What launchers may use: the worker's launcher settings, the children's niceness, the layout, and
    (for runs on several nodes) Redis and the training queue."""

    settings: LauncherSettings
    niceness: int
    layout: Layout
    training_queue: str
    redis: Redis | None = None
    queue: Callable[[], JobQueue | None] = field(default=_no_queue)


class Launcher(Protocol):
    """Starts a run's training processes."""

    def check(self, request: TrainRunRequest) -> str | None:
        """Why this worker cannot launch ``request`` (what to change), or ``None`` when it can."""
        ...

    async def command(self, job: RunJob, module: str, spec_path: Path) -> Command:
        """The command of one launch of ``module`` on the spec at ``spec_path`` (a fresh rendezvous each).

        Raises:
            mt_storage.runner.JobFailed: the launch cannot be made (the error says what to change).
        """
        ...


LauncherFactory = Callable[[LaunchContext], Launcher]


def launchers() -> dict[str, LauncherFactory]:
    """The registry: each launcher's name and how it is built (imported here, so each module stays alone)."""
    from mt_trainer_worker.launchers.local import LocalLauncher
    from mt_trainer_worker.launchers.torchrun import TorchrunLauncher
    from mt_trainer_worker.launchers.trainjob import TrainJobLauncher

    return {"local": LocalLauncher, "torchrun": TorchrunLauncher, "k8s-trainjob": TrainJobLauncher}
