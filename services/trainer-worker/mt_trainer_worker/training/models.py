"""Building the model of a run request from its family (``mt_contracts.families``: the one registry of
families, shared with the API's validation and parameter counting).

Every family is a ``transformers`` causal LM described by ``HfConfig``, so building is the same for all:
the config through ``AutoConfig.for_model``, the model through ``AutoModelForCausalLM.from_config`` with
PyTorch's scaled dot-product attention. Adding a family needs no change here.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from mt_contracts.families import family_of
from mt_contracts.requests import TrainRunRequest


def build_model(request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> PreTrainedModel:
    """A freshly initialised model of ``request.model`` whose embedding has ``vocab_size`` rows; it maps
    ``(batch, T) int64`` token ids to ``(batch, T, vocab_size)`` float logits and saves with
    ``save_pretrained``. Parameters are created on torch's current default device."""
    described = family_of(request).hf_config(request, vocab_size, end_of_text_id)
    config = AutoConfig.for_model(described.model_type, **described.options)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"built a {type(model).__name__}, not a PreTrainedModel")
    return model


def logits_of(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Forward pass: ``(batch, T) int64`` ids to ``(batch, T, vocab_size)`` logits (``model`` a family's
    model, or the DistributedDataParallel wrapping one)."""
    logits = model(input_ids=input_ids).logits
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model returned {type(logits).__name__} logits")
    return logits
