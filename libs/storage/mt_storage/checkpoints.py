"""Where a run's checkpoints live, how their index is read, and which files hold a run's weights (all
without torch: the API resolves them too).

::

    <runs_root>/<run_id>/checkpoints.json         the kept checkpoints, oldest first
    <runs_root>/<run_id>/checkpoints/step-<step>.pt
    <runs_root>/<run_id>/config.json              the model's HF config, written when training starts
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from mt_contracts import codec
from mt_contracts.evaluation import Weights
from mt_contracts.jobs import CheckpointInfo
from mt_contracts.manifests import ModelManifest
from mt_storage import StorageError
from mt_storage.layout import MANIFEST, Layout

CHECKPOINTS_DIR = "checkpoints"
INDEX = "checkpoints.json"
MODEL_CONFIG = "config.json"
TOKENIZER_JSON = "tokenizer.json"
# The final weights in a model folder, as save_pretrained writes them (safetensors).
WEIGHTS_FILE = "model.safetensors"


class NoWeights(StorageError):
    """The run has no final weights yet (it has not succeeded)."""


class CheckpointNotKept(StorageError):
    """The run keeps no checkpoint at the step asked for."""


def read_index(run_dir: Path) -> list[CheckpointInfo]:
    """The kept checkpoints of the run in ``run_dir``, oldest first (empty when there are none)."""
    path = run_dir / INDEX
    if not path.is_file():
        return []
    return codec.decode(path.read_bytes(), list[CheckpointInfo])


def resolve_weights(layout: Layout, run_id: str, tokenizer_id: str, checkpoint: int | None) -> Weights:
    """The files of run ``run_id``'s final weights (``checkpoint=None``) or of its kept checkpoint at step
    ``checkpoint``.

    Raises:
        NoWeights: final weights were asked for and the model folder has no manifest yet.
        CheckpointNotKept: no kept checkpoint has that step, or the model config for it is missing.
    """
    model_dir = layout.model_dir(run_id)
    run_dir = layout.run_dir(run_id)
    tokenizer_path = layout.tokenizer_dir(tokenizer_id) / TOKENIZER_JSON
    if checkpoint is None:
        manifest_path = model_dir / MANIFEST
        if not manifest_path.is_file():
            raise NoWeights(f"run {run_id} has no final weights yet; wait until it succeeds or name a checkpoint")
        try:
            manifest = codec.decode(manifest_path.read_bytes(), ModelManifest)
        except msgspec.DecodeError as exc:
            raise NoWeights(f"the model manifest of run {run_id} does not decode: {exc}") from exc
        return Weights(
            run_id=run_id,
            tokenizer_id=tokenizer_id,
            checkpoint=None,
            step=manifest.metrics.steps,
            model_dir=str(model_dir),
            config_path=str(model_dir / MODEL_CONFIG),
            tokenizer_path=str(model_dir / TOKENIZER_JSON),
        )
    kept = {entry.step: entry for entry in read_index(run_dir)}
    entry = kept.get(checkpoint)
    if entry is None:
        steps = ", ".join(str(step) for step in sorted(kept)) or "none"
        raise CheckpointNotKept(f"run {run_id} keeps no checkpoint at step {checkpoint}; kept steps: {steps}")
    # Runs trained before the run config was written have it only in their finished model folder.
    config = next((p for p in (run_dir / MODEL_CONFIG, model_dir / MODEL_CONFIG) if p.is_file()), None)
    if config is None:
        raise CheckpointNotKept(f"run {run_id} has no model config for its checkpoints; use the final weights")
    return Weights(
        run_id=run_id,
        tokenizer_id=tokenizer_id,
        checkpoint=checkpoint,
        step=checkpoint,
        model_dir=str(model_dir),
        config_path=str(config),
        tokenizer_path=str(tokenizer_path),
        checkpoint_path=str(run_dir / entry.path),
    )
