"""Where a run's checkpoints live and how their index is read (without torch: the API lists them too).

::

    <runs_root>/<run_id>/checkpoints.json         the kept checkpoints, oldest first
    <runs_root>/<run_id>/checkpoints/step-<step>.pt
"""

from __future__ import annotations

from pathlib import Path

from mt_contracts import codec
from mt_contracts.jobs import CheckpointInfo

CHECKPOINTS_DIR = "checkpoints"
INDEX = "checkpoints.json"


def read_index(run_dir: Path) -> list[CheckpointInfo]:
    """The kept checkpoints of the run in ``run_dir``, oldest first (empty when there are none)."""
    path = run_dir / INDEX
    if not path.is_file():
        return []
    return codec.decode(path.read_bytes(), list[CheckpointInfo])
