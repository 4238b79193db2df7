"""Loading a run's final weights or one of its checkpoints into a ``transformers`` model: the one module of
the evaluation process that touches HF's loosely typed loaders."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from mt_contracts.evaluation import Weights
from mt_trainer_worker.training import TrainingFailure


def load_model(weights: Weights, device: torch.device) -> PreTrainedModel:
    """The model of ``weights`` on ``device``, in inference mode (``train(False)``).

    Final weights load with ``from_pretrained``; a checkpoint is the architecture of ``config_path`` with
    the checkpoint's ``"model"`` state dict (read with ``weights_only=True``).

    Raises:
        TrainingFailure: ``weights_missing`` when a file is gone (a checkpoint pruned by a running run).
    """
    model: PreTrainedModel
    try:
        if weights.checkpoint is None:
            loaded = AutoModelForCausalLM.from_pretrained(weights.model_dir)
            if not isinstance(loaded, PreTrainedModel):
                raise TypeError(f"loaded a {type(loaded).__name__}, not a PreTrainedModel")
            model = loaded
        else:
            config = AutoConfig.from_pretrained(weights.config_path)
            try:
                built = AutoModelForCausalLM.from_config(config)
            except ValueError as exc:
                raise TrainingFailure("weights_unsupported", f"no causal LM for {config.model_type!r}") from exc
            if not isinstance(built, PreTrainedModel):
                raise TypeError(f"built a {type(built).__name__}, not a PreTrainedModel")
            model = built
            state = torch.load(Path(weights.checkpoint_path), map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
    except (FileNotFoundError, OSError) as exc:
        raise TrainingFailure("weights_missing", f"the weights of run {weights.run_id} are gone: {exc}") from exc
    model.train(False)
    torch.nn.Module.to(model, device)
    return model
