"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model weights, the optimizer state (AdamW moments and step counts), the step, torch's
global RNG state (used by dropout; rank 0's), and the run counters, among them the data position in tokens
(``tokens_seen``: the batch stream of ``data.WindowStream`` continues from it at any world size). It is
written with ``torch.save`` to a temporary file and renamed into place; the index ``checkpoints.json`` is
rewritten atomically after each one, then checkpoints beyond ``keep_checkpoints`` are deleted. Loading
uses ``weights_only=True``: a checkpoint file can hold tensors and plain values only.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import msgspec
import torch

from mt_contracts import codec
from mt_contracts.jobs import CheckpointInfo, utcnow
from mt_storage.checkpoints import CHECKPOINTS_DIR, INDEX, read_index
from mt_storage.files import atomic_write_bytes


class Counters(msgspec.Struct, kw_only=True):
    """Run counters carried across a resume. Seconds are training time, excluding data preparation."""

    step: int = 0
    elapsed_seconds: float = 0.0
    last_train_loss: float | None = None
    last_val_loss: float | None = None
    # The step of ``last_val_loss``: a checkpoint carries a validation loss only when it is of its own step.
    last_val_step: int | None = None
    # Training tokens drawn so far, over every rank: the data position (None in checkpoints that predate it).
    tokens_seen: int | None = None


def save_checkpoint(
    run_dir: Path,
    keep: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: Counters,
) -> CheckpointInfo:
    """Write the checkpoint for ``counters.step``; returns its index entry."""
    directory = run_dir / CHECKPOINTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step-{counters.step:09d}.pt"
    state: dict[str, object] = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "counters": codec.encode(counters).decode(),
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except RuntimeError as exc:
        # torch.save reports a failed write as a RuntimeError ("file write failed"): name a full disk as such.
        Path(tmp).unlink(missing_ok=True)
        if shutil.disk_usage(directory).free < _needed_bytes(state):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    info = CheckpointInfo(
        step=counters.step,
        path=f"{CHECKPOINTS_DIR}/{name}",
        size_bytes=(directory / name).stat().st_size,
        created_at=utcnow(),
        train_loss=counters.last_train_loss,
        val_loss=counters.last_val_loss if counters.last_val_step == counters.step else None,
    )
    entries = [entry for entry in read_index(run_dir) if entry.step != info.step] + [info]
    kept, dropped = entries[-keep:], entries[:-keep]
    atomic_write_bytes(run_dir / INDEX, codec.encode(kept))
    for entry in dropped:
        (run_dir / entry.path).unlink(missing_ok=True)
    return info


def _needed_bytes(state: dict[str, object]) -> int:
    """A lower bound of the bytes ``torch.save`` writes for ``state``: its tensors' storage."""
    total = 0
    stack: list[object] = [state]
    while stack:
        value = stack.pop()
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return total


def load_latest(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Counters | None:
    """Restore the newest checkpoint into ``model``, ``optimizer`` and torch's RNG and return its counters;
    ``None`` when the run has none."""
    index = read_index(run_dir)
    if not index:
        return None
    state = torch.load(run_dir / index[-1].path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return codec.decode(state["counters"], Counters)
