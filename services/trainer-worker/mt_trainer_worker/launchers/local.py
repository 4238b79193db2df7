"""The ``local`` launcher: the run's one training process, ``python -m <module>``, its spec on stdin."""

from __future__ import annotations

from pathlib import Path

from mt_contracts.jobs import RunJob
from mt_contracts.requests import TrainRunRequest
from mt_storage.process import Command, module_command
from mt_trainer_worker.launchers import LaunchContext


class LocalLauncher:
    """One process on this worker's machine."""

    def __init__(self, context: LaunchContext) -> None:
        self.context = context

    def check(self, request: TrainRunRequest) -> str | None:
        if request.world_size > 1:
            return "launcher local runs one process; use launcher torchrun for nnodes or nproc_per_node above 1"
        return None

    async def command(self, job: RunJob, module: str, spec_path: Path) -> Command:
        return module_command(module, self.context.niceness)
