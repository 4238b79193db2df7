"""The ``torchrun`` launcher: ``nnodes`` x ``nproc_per_node`` training processes started by torchrun
(``python -m torch.distributed.run``), ``--max-restarts 0``, a fresh rendezvous id and free port each launch.

On one node the rendezvous is on this machine (``127.0.0.1``). On several, the worker that took the run is
node 0: it hosts the rendezvous on a free port of ``LAUNCHER__RENDEZVOUS_HOST``, publishes it in Redis
(``mt:rendezvous:<run_id>``, a ``Rendezvous``) and queues one ``join_run`` job per other node; the trainer
workers that take those run the same torchrun with their node rank. Node ranks are given by the owner, not
by a dynamic (c10d) rendezvous, so global rank 0, whose stdout carries the run's messages, is always on the
worker that holds the run's lease (torchrun's static rendezvous, with the owner's TCP store). A node that
dies fails the launch on every node (their collectives fail); the owner's job runner starts the group again
from the last checkpoint, with a new rendezvous and new join jobs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
import tempfile
from pathlib import Path

from mt_contracts import codec
from mt_contracts.jobs import RunJob
from mt_contracts.queue import JOIN_RUN_TASK
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import LauncherSettings
from mt_contracts.training import Rendezvous
from mt_storage.child import SUPERVISOR_ENV
from mt_storage.process import Command, run_child
from mt_storage.runner import JobFailed
from mt_trainer_worker.launchers import LaunchContext

logger = logging.getLogger(__name__)
TRAINING_MODULE = "mt_trainer_worker.training"
# How long a published rendezvous stays in Redis (seconds): longer than any wait for the nodes to join.
RENDEZVOUS_TTL_SECONDS = 24 * 3600


def rendezvous_key(run_id: str) -> str:
    return f"mt:rendezvous:{run_id}"


def offered_processes(settings: LauncherSettings) -> int:
    """The most training processes this machine runs for one run: ``max_nproc_per_node``, else its cores."""
    return settings.max_nproc_per_node or os.cpu_count() or 1


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (the kernel's pick; torchrun binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def torchrun_command(
    rendezvous: Rendezvous, node_rank: int, module: str, spec_path: Path, niceness: int, settings: LauncherSettings
) -> Command:
    """``torchrun`` for node ``node_rank`` of ``rendezvous`` running ``module`` on the spec file, each rank at
    ``niceness`` with this machine's cores divided between its ranks (``OMP_NUM_THREADS``)."""
    argv = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(rendezvous.nnodes),
        "--nproc-per-node", str(rendezvous.nproc_per_node),
        "--node-rank", str(node_rank),
        "--master-addr", rendezvous.master_addr,
        "--master-port", str(rendezvous.master_port),
        "--rdzv-id", rendezvous.rendezvous_id,
        "--rdzv-conf", f"timeout={max(1, int(settings.rendezvous_timeout))}",
        "--max-restarts", "0",
        "--monitor-interval", "0.5",
        "-m", module, "--nice", str(niceness), "--spec-file", str(spec_path),
    ]  # fmt: skip
    env = {
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // rendezvous.nproc_per_node)),
        # The ranks' parent is torchrun: they watch this worker too, and stop once it is gone.
        SUPERVISOR_ENV: str(os.getpid()),
    }
    if settings.socket_ifname:
        env |= {"GLOO_SOCKET_IFNAME": settings.socket_ifname, "NCCL_SOCKET_IFNAME": settings.socket_ifname}
    return Command(argv=argv, env=env, spec_on_stdin=False)


class TorchrunLauncher:
    """torchrun on this node and, for ``nnodes`` above 1, on other trainer workers."""

    def __init__(self, context: LaunchContext) -> None:
        self.context = context

    def check(self, request: TrainRunRequest) -> str | None:
        offered = offered_processes(self.context.settings)
        if request.nproc_per_node > offered:
            return (
                f"nproc_per_node={request.nproc_per_node} but this worker offers {offered} processes "
                "(LAUNCHER__MAX_NPROC_PER_NODE, else its cores); lower nproc_per_node"
            )
        if request.nnodes > 1 and self.context.redis is None:
            return "a run on several nodes needs trainer workers that share Redis"
        return None

    async def command(self, job: RunJob, module: str, spec_path: Path) -> Command:
        request = job.request
        settings = self.context.settings
        host = settings.rendezvous_host if request.nnodes > 1 else "127.0.0.1"
        try:
            port = free_port(host)
        except OSError as exc:
            raise JobFailed(
                "launcher_unavailable", f"no free port on LAUNCHER__RENDEZVOUS_HOST={host}: {exc}; set it to an "
                "address of this worker's machine"
            ) from exc  # fmt: skip
        rendezvous = Rendezvous(
            run_id=job.id,
            rendezvous_id=f"{job.id}-{job.attempts}-{secrets.token_hex(4)}",
            master_addr=host,
            master_port=port,
            nnodes=request.nnodes,
            nproc_per_node=request.nproc_per_node,
            spec=await asyncio.to_thread(spec_path.read_bytes),
        )
        if request.nnodes > 1:
            await self._publish(rendezvous)
        return torchrun_command(rendezvous, 0, module, spec_path, self.context.niceness, settings)

    async def _publish(self, rendezvous: Rendezvous) -> None:
        """Publish the launch and queue one join job for each other node."""
        queue = self.context.queue()
        if self.context.redis is None or queue is None:
            raise JobFailed("launcher_unavailable", "a run on several nodes needs the worker's Redis and queue")
        key = rendezvous_key(rendezvous.run_id)
        await self.context.redis.set(key, codec.encode(rendezvous), ex=RENDEZVOUS_TTL_SECONDS)
        for node_rank in range(1, rendezvous.nnodes):
            join_id = f"{rendezvous.run_id}:{rendezvous.rendezvous_id}:{node_rank}"
            await queue.enqueue(JOIN_RUN_TASK, join_id, self.context.training_queue)


async def join_run(join_id: str, context: LaunchContext, grace: float) -> int | None:
    """Run node ``node_rank`` of a published launch (job id ``<run_id>:<rendezvous_id>:<node_rank>``) to its
    end; returns torchrun's exit code, or ``None`` when the launch is no longer the run's current one (the run
    moved on to another launch, or ended). Its ranks write to ``process-node-<k>.log`` in the run's folder."""
    run_id, rendezvous_id, node = join_id.split(":")
    if context.redis is None:
        return None
    data = await context.redis.get(rendezvous_key(run_id))
    if data is None:
        return None
    rendezvous = codec.decode(data, Rendezvous)
    if rendezvous.rendezvous_id != rendezvous_id:
        return None
    log_path = context.layout.run_dir(run_id) / f"process-node-{node}.log"
    with tempfile.TemporaryDirectory(prefix="mt-join-") as scratch:
        spec_path = Path(scratch) / "spec.json"
        spec_path.write_bytes(rendezvous.spec)
        command = torchrun_command(
            rendezvous, int(node), TRAINING_MODULE, spec_path, context.niceness, context.settings
        )

        async def discard(line: bytes) -> None:
            return None  # ranks other than 0 write nothing on stdout that the run keeps

        code = await run_child(
            TRAINING_MODULE, b"", niceness=context.niceness, log_path=log_path, on_line=discard, grace=grace,
            command=command,
        )  # fmt: skip
    logger.info(
        "joined run ended",
        extra={"event": "join_ended", "job_id": run_id, "node_rank": int(node), "return_code": code},
    )
    return code
