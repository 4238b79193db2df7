"""The ranks of a training process and the few collectives the loop needs.

A process started by ``torchrun`` learns its place from the variables torchrun sets (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, and ``MASTER_ADDR``/``MASTER_PORT`` for the process
group), read here once; a process without them is rank 0 of 1 and runs no collective at all. The process
group is gloo on the CPU and NCCL on CUDA.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

import msgspec
import torch
import torch.distributed as dist

# How long a collective waits for a peer before failing the process (a dead peer usually fails it sooner,
# through its closed connection).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class Ranks(msgspec.Struct, frozen=True, kw_only=True):
    """This process's place among the run's processes: global ``rank`` of ``world_size``, ``local_rank`` of
    ``local_world_size`` on this machine. Rank 0 alone writes checkpoints, events and artifacts."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


# A process not started by torchrun: rank 0 of 1.
SINGLE = Ranks()


def ranks_from_env(environ: Mapping[str, str]) -> Ranks:
    """The ranks torchrun gave this process, or rank 0 of 1 when it was not started by torchrun."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return SINGLE
    return Ranks(
        rank=int(environ["RANK"]),
        local_rank=int(environ.get("LOCAL_RANK", "0")),
        world_size=int(environ["WORLD_SIZE"]),
        local_world_size=int(environ.get("LOCAL_WORLD_SIZE", "1")),
    )


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the run's process group (gloo on the CPU, NCCL on CUDA); nothing for a single process."""
    if ranks.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's collectives and barriers run on the current device
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)


def finish() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """The sums of ``values`` over every rank (float64), in one all-reduce; ``values`` itself for a single
    process.

    Raises:
        torch.distributed.DistError: a peer failed or did not answer within ``COLLECTIVE_TIMEOUT``.
    """
    if ranks.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(value) for value in tensor.tolist()]


# What gloo and NCCL errors say when a peer is gone: they are often plain RuntimeErrors, not DistErrors.
_PEER_FAILURE_MARKERS = ("gloo", "nccl", "connection closed", "connection reset", "timed out")


def is_peer_failure(exc: BaseException, ranks: Ranks) -> bool:
    """Whether ``exc`` is a collective that failed because another rank (or its node) is gone, rather than
    an error of this rank's own."""
    if ranks.world_size == 1:
        return False
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _PEER_FAILURE_MARKERS)


def barrier(ranks: Ranks) -> None:
    """Wait until every rank reaches this point; nothing for a single process."""
    if ranks.world_size > 1:
        dist.barrier()
