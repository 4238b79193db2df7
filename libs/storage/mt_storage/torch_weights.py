"""Loading a run's final weights or one of its checkpoints into a ``transformers`` model, for every process
that needs them (the evaluation child and the gateway's inference children): the one place that touches HF's
loosely typed loaders for weights. Imported by child processes only: it imports torch, never redis."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from mt_contracts.evaluation import Weights
from mt_storage.child import ChildFailure


def load_model(weights: Weights, device: torch.device | None = None) -> PreTrainedModel:
    """The model of ``weights`` on ``device``, in inference mode (``train(False)``).

    Final weights load with ``from_pretrained``; a checkpoint is the architecture of ``config_path`` with
    the checkpoint's ``"model"`` state dict (read with ``weights_only=True``).

    Raises:
        ChildFailure: ``weights_missing`` when a file is gone (a checkpoint pruned by a running run).
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
                raise ChildFailure("weights_unsupported", f"no causal LM for {config.model_type!r}") from exc
            if not isinstance(built, PreTrainedModel):
                raise TypeError(f"built a {type(built).__name__}, not a PreTrainedModel")
            model = built
            state = torch.load(Path(weights.checkpoint_path), map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
    except OSError as exc:
        raise ChildFailure("weights_missing", f"the weights of run {weights.run_id} are gone: {exc}") from exc
    model.train(False)
    if device is not None:
        torch.nn.Module.to(model, device)
    return model


def load_weights_into(model: torch.nn.Module, weights: Weights) -> None:
    """Copy the parameters of ``weights`` into ``model`` in place (its parameters stay the same tensors, so an
    optimizer built on them stays valid). The two must have the same architecture and shapes.

    Raises:
        ChildFailure: ``weights_missing`` when a file is gone. RuntimeError: a key or shape differs.
    """
    model.load_state_dict(load_model(weights).state_dict())
